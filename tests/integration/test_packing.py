"""`commbench sweep --pack`: two one-core trials run at the same time, each in its own process on its own core.

This machine has 2 cores, on which the planner never packs (one core is kept for the
launchers): `COMMBENCH_PACK_RESERVE=0`, a knob for tests only, lets both trials have one.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest

from bench.cli import main
from bench.contracts import TrialConfig
from bench.runner.executors import PACK_RESERVE_ENV
from bench.storage.parquet import read_results
from bench.system import environment, history_key

pytestmark = pytest.mark.multirank

SUITE = """
name = "packed"
[matrix]
strategies = ["baseline"]
models = ["none"]
workloads = ["collectives"]
world_sizes = [1]
"options.size_bytes" = [65536, 131072]
[settings]
threads_per_rank = 1
steps = 20
warmup_steps = 1
profile_steps = 0
timeout_s = 180
"""


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2, reason="two trials need a core each"
)
def test_a_wave_runs_its_trials_at_once_on_disjoint_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cores = sorted(os.sched_getaffinity(0))
    suite = tmp_path / "packed.toml"
    suite.write_text(SUITE)
    monkeypatch.setenv(PACK_RESERVE_ENV, "0")
    argv = ["sweep", str(suite), "--pack", "--results", str(tmp_path / "res"), "--no-report", "--no-progress"]
    assert main(argv) == 0
    assert "packing: 2 trials in 1 waves, 2 of them beside another trial" in capsys.readouterr().err
    df = read_results([tmp_path / "res" / "packed"])
    assert list(df["status"]) == ["ok", "ok"], list(df["error"])
    a, b = df.iloc[0], df.iloc[1]
    assert list(a["packed_with"]) == [b["trial_id"]] and list(b["packed_with"]) == [a["trial_id"]]
    # Each trial's rank ran on its own core of the slots the planner handed out (cores[0], cores[1]),
    # all of its threads (gloo's included) too: COMMBENCH_CPUSET reached the rank.
    pinned = {json.loads(r["pinned_cores"])[0][0] for _, r in df.iterrows()}
    assert pinned == set(cores[:2])
    for _, r in df.iterrows():
        (own,) = json.loads(r["pinned_cores"])
        assert all(c == own for c in json.loads(r["thread_cores"])[0].values()), r["thread_cores"]
    # Side by side in time: each trial's launch started before the other's ended.
    spans = [(r["started_at"], r["started_at"] + timedelta(seconds=r["trial_wall_s"])) for _, r in df.iterrows()]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], spans
    # Packed timings compete with a neighbour: they keep a history apart from the same trial run alone.
    cfg = TrialConfig.from_dict(json.loads(a["config"]))
    assert a["history_key"] != history_key(cfg.case(), environment())

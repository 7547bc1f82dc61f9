"""The two launch paths: forkserver rows equal spawn rows outside timings, and no trial leaks into the next."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.contracts import TrialConfig
from bench.runner import suite as suites
from bench.runner.sweep import run_sweep
from bench.runner.trial import run_trial
from bench.storage.parquet import read_results
from bench.storage.schema import PHASE_COLUMNS, deterministic_view
from tests.suites import one_step_suite

pytestmark = pytest.mark.multirank

TRIAL = TrialConfig(
    suite="paths", strategy="baseline", model="gpt2-tiny", workload="train", world_size=2,
    steps=3, warmup_steps=2, batch_size=2, seq_len=32, eval_batches=1, profile_steps=1, timeout_s=180,
)  # fmt: skip


def test_forkserver_rows_equal_spawn_rows_outside_timings(tmp_path: Path) -> None:
    rows = {m: run_trial(TRIAL, "r", [], tmp_path / m, launch_method=m)[0] for m in ("spawn", "forkserver")}
    for method, row in rows.items():
        assert row["status"] == "ok", row["error"]
        assert row["launch_method"] == method
        # Every phase timed, and together they are the trial's wall time (one clock, no gaps).
        phases = [row[c] for c in PHASE_COLUMNS]
        assert all(p is not None and p >= 0 for p in phases), dict(zip(PHASE_COLUMNS, phases, strict=True))
        assert sum(phases) == pytest.approx(row["trial_wall_s"], rel=0.02)
    spawn, fork = (deterministic_view(rows[m]) for m in ("spawn", "forkserver"))
    assert spawn.keys() == fork.keys()
    assert {k: (spawn[k], fork[k]) for k in spawn if spawn[k] != fork[k]} == {}
    assert spawn["eval_loss"] is not None and spawn["comm_logical_bytes_per_step"] > 0  # the compared values are real
    # The preload happened: a forked rank imports next to nothing; a spawned one imports torch.
    assert rows["forkserver"]["phase_import_s"] < 0.5 * rows["spawn"]["phase_import_s"]


SUITE = one_step_suite(
    "isolation", ["patch_torch"], plugins=["tests.plugins.patch_torch"], workloads=["train"], world_sizes=[1, 2], timeout_s=180
)


def test_a_trial_that_patches_torch_leaves_no_trace_in_the_next(tmp_path: Path) -> None:
    path = tmp_path / "isolation.toml"
    path.write_text(SUITE)
    outcome = run_sweep(suites.load(str(path)), tmp_path / "results", progress=False, launch_method="forkserver")
    assert outcome.counts == {"ok": 2}
    df = read_results([tmp_path / "results" / "isolation"]).sort_values("started_at")
    metrics = [json.loads(m) for m in df["metrics"]]
    # Each trial patched torch in its ranks (the patch took) ...
    assert [m["torch_patched_after"] for m in metrics] == list(df["trial_id"])
    # ... and none found a patch when it started: not the second, after the first had patched.
    assert [(m["torch_patched_before"], m["gelu_patched_before"]) for m in metrics] == [(None, None), (None, None)]

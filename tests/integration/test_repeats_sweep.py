"""A real sweep with repeats: two tiny trials launched three times in shuffled rounds, and one launched once."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bench.runner import suite as suites
from bench.runner.sweep import run_sweep
from bench.storage.parquet import read_results

pytestmark = pytest.mark.multirank

SUITE = """
name = "rtest"
[matrix]
strategies = ["baseline"]
workloads = ["collectives"]
world_sizes = [1]
"options.size_bytes" = [4096, 65536, 1048576]
[settings]
steps = 5
warmup_steps = 1
profile_steps = 0
repeats = 3
[[override]]
match = { "options.size_bytes" = 1048576 }
repeats = 1
"""


def test_three_launches_give_a_ci_and_one_launch_a_null_ci_with_its_reason(tmp_path: Path) -> None:
    path = tmp_path / "rtest.toml"
    path.write_text(SUITE)
    outcome = run_sweep(suites.load(str(path)), tmp_path / "results", progress=False, round_seed=11)
    assert outcome.counts == {"ok": 3}
    df = read_results([tmp_path / "results" / "rtest"]).set_index("trial_id")
    assert len(df) == 3  # one row per trial, rewritten after each launch
    by_size = {json.loads(r["config"])["options"]["size_bytes"]: r for _, r in df.iterrows()}
    for size in (4096, 65536):
        row = by_size[size]
        per = list(row["latency_p50_s_per_launch"])
        assert row["launches"] == 3 and list(row["launch_rounds"]) == [0, 1, 2] and row["repeat_stop"] == "fixed"
        assert row["latency_p50_s"] == pytest.approx(sorted(per)[1])
        assert (row["latency_p50_s_ci_low"], row["latency_p50_s_ci_high"]) == (min(per), max(per)) and row["ci_level"] == 0.75
        assert row["algbw_Bps_ci_low"] <= row["algbw_Bps"] <= row["algbw_Bps_ci_high"] and len(row["algbw_Bps_per_launch"]) == 3
        assert len(row["latency_samples_s"]) == 3 * 5 and row["round_seed"] == 11 and row["repeat_target_met"] is None
    one = by_size[1048576]
    reasons = json.loads(one["null_reasons"])
    assert one["launches"] == 1 and pd.isna(one["latency_p50_s_ci_low"]) and "one launch" in reasons["latency_p50_s_ci_low"]
    # The sweep's noise, on every row.
    assert df["noise_ref_cv"].notna().all() and df["noisy"].notna().all() and len(df["noise_ref_s"].iloc[0]) >= 6

"""The submitit path, through submitit's LocalExecutor: the same rows as a local sweep, and a dead job still gives a row."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bench.runner import suite as suites
from bench.runner.executors import LocalExecutor, SubmititExecutor
from bench.runner.sweep import run_sweep
from bench.storage.parquet import read_results
from bench.storage.schema import RUN_VARYING
from tests.plugins.faults import die_in_job
from tests.suites import one_step_suite

pytestmark = pytest.mark.multirank

SUITE = one_step_suite("jobs", ["baseline", "fault(kind=raise)"], plugins=["tests.plugins.faults"], eval_batches=1)
# What differs between any two runs of one trial (`schema.RUN_VARYING`), plus the failed row's
# texts (they name its run's log paths) and `metrics` (timings inside its JSON).
VARYING = RUN_VARYING | {"stderr_tail", "error", "metrics"}


def _sweep(tmp: Path, executor: object) -> pd.DataFrame:
    tmp.mkdir()
    (tmp / "jobs.toml").write_text(SUITE)
    outcome = run_sweep(suites.load(str(tmp / "jobs.toml")), tmp / "results", progress=False, executor=executor)  # type: ignore[arg-type]
    assert outcome.counts == {"ok": 1, "failed": 1}
    return read_results([tmp / "results" / "jobs"]).sort_values("trial_id").reset_index(drop=True)


def test_submitit_jobs_give_the_rows_a_local_sweep_gives(tmp_path: Path) -> None:
    local = _sweep(tmp_path / "local", LocalExecutor())
    jobs = _sweep(tmp_path / "submitit", SubmititExecutor("submitit-local", {}, poll_s=0.5))
    same = [c for c in local.columns if c not in VARYING]
    assert {"trial_id", "status", "error_class", "failed_rank", "eval_loss", "comm_logical_bytes_per_step"} <= set(same)
    # The sweep's noise is measured only between the local executor's launches: its reasons differ, and only they.
    noise = {"noise_ref_cv", "noise_foreign_cores", "load_avg_1m", "noisy"}
    for df in (local, jobs):
        df["null_reasons"] = [json.dumps({k: v for k, v in json.loads(r).items() if k not in noise}) for r in df["null_reasons"]]
    pd.testing.assert_frame_equal(local[same], jobs[same])
    failed = jobs[jobs["status"] == "failed"].iloc[0]
    assert "deliberate fault" in failed.error and "deliberate fault" in failed.stderr_tail
    assert (tmp_path / "submitit" / "results" / "jobs" / "logs" / jobs.run_id[0] / "submitit").is_dir()


def test_a_job_that_dies_still_gives_a_failed_row(tmp_path: Path) -> None:
    (tmp_path / "jobs.toml").write_text(SUITE)
    suite = suites.load(str(tmp_path / "jobs.toml"))
    one = suites.Suite(suite.name, "", suite.path, suite.trials[:1])
    outcome = run_sweep(
        one, tmp_path / "results", progress=False, executor=SubmititExecutor("submitit-local", {}, run=die_in_job, poll_s=0.5)
    )
    assert outcome.counts == {"failed": 1}
    row = read_results([tmp_path / "results" / "jobs"]).iloc[0]
    assert row.error_class == "job" and pd.isna(row.failed_rank)
    assert row.trial_id == one.trials[0].config.trial_id and row.strategy == "baseline"
    assert "the job process exits" in row.stderr_tail

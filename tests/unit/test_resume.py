"""Resume: a trial is done only when recorded ok by the current measurement code; --force reruns anyway."""

from __future__ import annotations

import json
from pathlib import Path

from bench.contracts import MEASUREMENT_VERSION
from bench.runner import suite as suites
from bench.runner.sweep import plan
from bench.storage.parquet import RunWriter, completed_trials
from bench.system import now_utc

SUITE = {
    "name": "resume",
    "matrix": {"strategies": ["baseline", "fp16_compress", "topk", "signsgd"], "models": ["gpt2-tiny"], "world_sizes": [2]},
}


def _row(trial_id: str, version: int | None, status: str = "ok") -> dict[str, object]:
    return {
        "schema_version": 1, "measurement_version": version, "run_id": "r", "trial_id": trial_id, "suite": "resume",
        "strategy": "x", "status": status, "started_at": now_utc(), "config": json.dumps({}),
    }  # fmt: skip


def test_rows_of_older_measurement_code_are_rerun(tmp_path: Path) -> None:
    suite = suites.from_dict(SUITE, tmp_path / "resume.toml")
    ids = {t.config.strategy: t.config.trial_id for t in suite.trials}
    writer = RunWriter(tmp_path / "resume", "r")
    writer.add(_row(ids["baseline"], MEASUREMENT_VERSION), [])
    writer.add(_row(ids["fp16_compress"], MEASUREMENT_VERSION - 1), [])
    writer.add(_row(ids["topk"], MEASUREMENT_VERSION, status="failed"), [])
    writer.add(_row(ids["signsgd"], None), [])  # a file from before versions were stored
    assert completed_trials(tmp_path / "resume", MEASUREMENT_VERSION) == {
        ids["baseline"]: MEASUREMENT_VERSION, ids["fp16_compress"]: MEASUREMENT_VERSION - 1, ids["signsgd"]: 0,
    }  # fmt: skip
    actions = {t.config.strategy: a for t, a in plan(suite, tmp_path / "resume", force=False)}
    assert actions == {
        "baseline": "done",
        "fp16_compress": f"run: recorded by measurement version {MEASUREMENT_VERSION - 1}, now {MEASUREMENT_VERSION}",
        "topk": "run",
        "signsgd": f"run: recorded by measurement version 0, now {MEASUREMENT_VERSION}",
    }
    assert {a for _, a in plan(suite, tmp_path / "resume", force=True)} == {"run"}
    # A newer row of the same trial makes it done; a row from newer code than this is not reused.
    writer.add(_row(ids["fp16_compress"], MEASUREMENT_VERSION), [])
    writer.add(_row(ids["topk"], MEASUREMENT_VERSION + 1), [])
    actions = {t.config.strategy: a for t, a in plan(suite, tmp_path / "resume", force=False)}
    assert actions["fp16_compress"] == "done" and actions["topk"] == "run"

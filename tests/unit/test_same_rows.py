"""`bench.benchmarks.same_rows` pairs rows by trial and sees only deterministic differences."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.benchmarks.same_rows import main
from bench.storage.parquet import RunWriter
from bench.storage.schema import SCHEMA_VERSION


def _row(trial: str, **over: Any) -> dict[str, Any]:
    row = {
        "schema_version": SCHEMA_VERSION, "run_id": "r", "trial_id": trial, "strategy": "baseline", "model": "m",
        "workload": "train", "world_size": 2, "status": "ok", "latency_p50_s": 0.1, "model_bytes": 100,
        "git_sha": "aaa", "metrics": json.dumps({"grad_bytes": 8, "reference_s": 1.0}),
        "loss_curve": [1.0, 0.5], "sparsity": None,
    }  # fmt: skip
    return {**row, **over}


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.mkdir()
    writer = RunWriter(path, "run")
    for row in rows:
        writer.add(row, [])
    return path


def test_run_varying_columns_and_the_code_revision_are_ignored(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = _write(tmp_path / "a", [_row("t1"), _row("t2")])
    # Another run, other timings (a column and a `*_s` metric), another commit: the same rows.
    other = json.dumps({"grad_bytes": 8, "reference_s": 9.0})
    cand = _write(tmp_path / "b", [_row("t2", run_id="x", latency_p50_s=0.2, git_sha="bbb", metrics=other), _row("t1")])
    assert main([str(base), str(cand)]) == 0
    out = capsys.readouterr().out
    assert out.count("identical") == 2 and '"same": true' in out


def test_a_changed_value_names_its_column_and_metrics_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = _write(tmp_path / "a", [_row("t1")])
    cand = _write(tmp_path / "b", [_row("t1", model_bytes=101, loss_curve=[1.0, 0.4], metrics=json.dumps({"grad_bytes": 9}))])
    assert main([str(base), str(cand)]) == 1
    assert "t1  baseline | m | train | ws=2  different: loss_curve, metrics.grad_bytes, model_bytes" in capsys.readouterr().out


def test_a_trial_on_one_side_only_fails_unless_paired_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = _write(tmp_path / "a", [_row("t1"), _row("t2")])
    cand = _write(tmp_path / "b", [_row("t1")])
    assert main([str(base), str(cand)]) == 1
    assert "t2  only in base" in capsys.readouterr().out
    assert main([str(base), str(cand), "--paired-only"]) == 0

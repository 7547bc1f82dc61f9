"""Report building from stored result files (fixtures written through the real writer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.reports.html import with_baseline_ratios, write_report
from bench.reports.plots import pareto_front
from bench.storage.parquet import RunWriter, read_results
from bench.system import now_utc


def test_pareto_front() -> None:
    pts = [(1.0, 5.0), (2.0, 3.0), (3.0, 4.0), (4.0, 1.0), (2.0, 3.0)]
    # (3, 4) is beaten by (2, 3); the duplicate (2, 3)s do not dominate each other.
    assert pareto_front(pts) == [0, 1, 4, 3]


def _row(strategy: str, latency: float, nbytes: float, loss: float, status: str = "ok") -> dict[str, object]:
    return {
        "schema_version": 1, "run_id": "r", "trial_id": strategy, "suite": "s", "strategy": strategy, "model": "gpt2-tiny",
        "workload": "train", "device": "cpu", "backend": "gloo", "world_size": 2, "batch_size": 8, "seq_len": 64, "steps": 5,
        "status": status, "error": None if status == "ok" else "boom", "latency_p50_s": latency,
        "comm_logical_bytes_per_step": nbytes, "eval_loss": loss, "bayes_loss": 1.0, "loss_curve": [3.0, 2.0],
        "started_at": now_utc(), "config": json.dumps({"options": {}}), "analytic_ops": json.dumps({"all_reduce": nbytes / 2}),
        "modelled_wire_bytes_per_step": nbytes, "wire_bytes_per_step": nbytes * 1.001,
    }  # fmt: skip


@pytest.fixture
def results(tmp_path: Path) -> Path:
    w = RunWriter(tmp_path / "s", "r")
    w.add(_row("baseline", 0.10, 2e6, 2.0), [])
    w.add(_row("fp16_compress", 0.08, 1e6, 2.01), [])
    w.add(_row("raise_in_rank", 0.0, 0.0, 0.0, status="failed"), [])
    return tmp_path / "s"


def test_ratios_against_baseline(results: Path) -> None:
    df = with_baseline_ratios(read_results([results]))
    fp16 = df[df.strategy == "fp16_compress"].iloc[0]
    assert fp16.latency_ratio == pytest.approx(0.8) and fp16.bytes_ratio == pytest.approx(0.5)
    assert fp16.loss_gap_to_baseline == pytest.approx(0.01)


def test_report_is_self_contained_html(results: Path, tmp_path: Path) -> None:
    out = write_report([results], tmp_path / "r.html")
    text = out.read_text()
    assert text.startswith("<!doctype html>") and "</html>" in text
    assert "data:image/png;base64," in text  # figures are inlined, no external files
    assert "fp16_compress" in text and "0.500×" in text  # bytes ratio vs baseline
    assert "Accuracy vs bytes" in text and "Bytes: logical vs wire vs analytic" in text
    assert "failed: raise_in_rank" in text and "boom" in text
    assert "<img" in text and "src='http" not in text


def _infer_row(strategy: str, model: str, model_bytes: int, **accuracy: float) -> dict[str, object]:
    row = _row(strategy, 0.05, 0.0, float("nan"))
    row.update(workload="infer", model=model, world_size=1, trial_id=f"{strategy}-{model}", comm_logical_bytes_per_step=None,
               eval_loss=None, loss_curve=None, model_bytes=model_bytes, model_sparse_bytes=model_bytes, **accuracy)
    return row  # fmt: skip


def _report_of(rows: list[dict[str, object]], tmp_path: Path) -> str:
    w = RunWriter(tmp_path / "s", "r")
    for row in rows:
        w.add(row, [])
    return write_report([tmp_path / "s"], tmp_path / "r.html").read_text()


def test_infer_report_plots_perplexity_and_embedding_gap_against_bytes(tmp_path: Path) -> None:
    text = _report_of([
        _infer_row("baseline", "smollm2-135m", 540_000_000, perplexity=14.5),
        _infer_row("quant_int8_wo", "smollm2-135m", 220_000_000, perplexity=14.6),
        _infer_row("prune_l1", "smollm2-135m", 400_000_000, perplexity=30.0),  # beaten on both axes
        _infer_row("baseline", "minilm-l6", 90_000_000, embedding_cosine=1.0),
        _infer_row("cast_fp16", "minilm-l6", 45_000_000, embedding_cosine=0.9999),
    ], tmp_path)  # fmt: skip
    assert "Model compression" in text and "Accuracy vs model size" in text
    assert "alt='perplexity vs bytes' src='data:image/png;base64," in text
    assert "alt='embedding gap vs bytes' src='data:image/png;base64," in text
    assert "14.6000" in text and "220.000" in text  # the table: perplexity and model MB


def test_no_accuracy_vs_size_without_perplexity_or_embeddings(tmp_path: Path) -> None:
    text = _report_of([_infer_row("baseline", "gpt2-tiny", 5_000_000), _infer_row("cast_fp16", "gpt2-tiny", 2_500_000)], tmp_path)
    assert "Model compression" in text and "Accuracy vs model size" not in text
    assert "perplexity vs bytes" not in text and "embedding gap vs bytes" not in text
    train_only = _report_of([_row("baseline", 0.1, 2e6, 2.0)], tmp_path / "train")
    assert "Model compression" not in train_only and "Accuracy vs model size" not in train_only


def test_oversubscribed_rows_are_marked(tmp_path: Path) -> None:
    fits, over = _row("baseline", 0.1, 2e6, 2.0), _row("fp16_compress", 0.3, 1e6, 2.0)
    fits["oversubscribed"], over["oversubscribed"] = False, True
    text = _report_of([fits, over], tmp_path)
    assert text.count("<tr class='ok oversubscribed'>") == 1 and "⚠ oversubscribed: ranks × threads" in text
    assert "<tr class='ok'>" in text  # the row that fits is not marked

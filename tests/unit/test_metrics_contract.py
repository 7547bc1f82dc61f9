"""Strategy and workload metrics are a typed contract: declared, checked against the schema, refused when undeclared."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
from torch import nn

from bench.contracts import Accuracy, MemoryPeaks, Parallel, RankResult, TrialConfig, WindowResult
from bench.errors import BenchError
from bench.registry import Registry
from bench.runner.rows import check_metrics, column_metrics, declared_metrics
from bench.storage.schema import TRIAL_COLUMNS
from bench.strategies import STRATEGIES, Aspect, Composition, Metric, Strategy, TrialState, check_strategy
from bench.strategies.metrics import Metrics, check_declared
from bench.workloads import WORKLOADS


class _Writes(Strategy):
    name = "writes"
    summary = "records one metric"
    aspect = Aspect.MODEL
    metrics: ClassVar[tuple[Metric, ...]] = (Metric("kept", int, "count"),)
    key, value = "kept", 3

    def apply(self, state: TrialState) -> None:
        state.metrics[self.key] = self.value


def _state() -> TrialState:
    return TrialState(cfg=None, env=None, spec=None, model=nn.Linear(2, 2))  # type: ignore[arg-type]


def _run(cls: type[Strategy]) -> TrialState:
    state = _state()
    Composition.of([cls(cls.Params())]).apply(Aspect.MODEL, state)
    return state


def test_a_declared_metric_is_recorded() -> None:
    assert _run(_Writes).metrics == {"kept": 3}


def test_an_undeclared_metric_fails_naming_the_strategy_and_the_key() -> None:
    class Undeclared(_Writes):
        key = "scratch"

    with pytest.raises(TypeError, match=r"writes: undeclared metric\(s\) scratch; declared: kept"):
        _run(Undeclared)


def test_a_metric_of_the_wrong_type_fails() -> None:
    class WrongType(_Writes):
        value = "three"  # type: ignore[assignment]

    with pytest.raises(TypeError, match="metric 'kept' is declared int, got str"):
        _run(WrongType)


def test_every_way_of_writing_is_checked_and_none_is_always_allowed() -> None:
    m = Metrics((Metric("a", float), Metric("b", list)))
    m.update(a=1, b=(1, 2))  # an int is a float, a tuple a list
    m["a"] = None  # not applicable is null, not 0
    m.setdefault("b", [])
    for write in (lambda: m.update(c=1), lambda: m.setdefault("c", 1), lambda: m.__ior__({"c": 1})):
        with pytest.raises(TypeError, match="undeclared metric"):
            write()
    assert dict(m) == {"a": None, "b": (1, 2)}


def test_a_strategy_writes_only_its_own_metrics_and_the_workload_only_its_own() -> None:
    m = Metrics((Metric("model_params", int, "count"),), owner="the train workload")
    with m.written_by("writes", _Writes.metrics):
        m["kept"] = 1
        with pytest.raises(TypeError, match="writes: undeclared metric"):
            m["model_params"] = 1
    m["model_params"] = 1
    with pytest.raises(TypeError, match="the train workload: undeclared metric"):
        m["kept"] = 2


@pytest.mark.parametrize(
    ("metric", "error"),
    [
        (Metric("x", int, "B", column="no_such_column"), "fills column 'no_such_column', which bench.storage.schema does not have"),
        (Metric("x", float, "B", column="model_bytes"), "is float but column 'model_bytes' is int64"),
        (Metric("x", int, "MB", column="model_bytes"), "is in 'MB' but column 'model_bytes' is in 'B'"),
    ],
)
def test_a_metric_without_its_column_fails_when_the_strategy_registers(metric: Metric, error: str) -> None:
    class Bad(_Writes):
        name = "bad"
        metrics = (metric,)

    reg: Registry[type[Strategy]] = Registry("strategy", check=check_strategy)
    with pytest.raises(BenchError, match=f"strategy bad: metric 'x' {error}"):
        reg.register("bad")(Bad)
    assert "bad" not in reg


def test_a_metric_declared_twice_fails() -> None:
    with pytest.raises(BenchError, match="declared twice"):
        check_declared("strategy s", (Metric("x", int), Metric("x", int)))


def test_a_metric_type_must_be_one_a_row_can_hold() -> None:
    with pytest.raises(TypeError, match="type must be one of"):
        Metric("x", set)


def _owners() -> list[tuple[str, tuple[Metric, ...]]]:
    return [(f"strategy {n}", STRATEGIES.get(n).metrics) for n in STRATEGIES.names()] + [
        (f"workload {n}", WORKLOADS.get(n).metrics) for n in WORKLOADS.names()
    ]


def test_every_builtin_declaration_agrees_with_the_schema_and_with_the_others() -> None:
    seen: dict[str, Metric] = {}
    for owner, metrics in _owners():
        check_declared(owner, metrics)
        for m in metrics:
            assert not m.name.startswith("_"), f"{owner}: scratch state {m.name!r} belongs on the instance, not in metrics"
            other = seen.setdefault(m.name, m)
            assert (other.type, other.unit, other.column) == (m.type, m.unit, m.column), f"{owner} redeclares {m.name!r}"


def test_the_metric_columns_are_derived_from_the_declarations() -> None:
    columns = {m.column: m.name for _, m in column_metrics()}
    assert columns == {
        "model_params": "model_params", "model_bytes": "model_bytes", "model_sparse_bytes": "model_sparse_bytes",
        "sparsity": "sparsity_pruned", "transfer_payload_bytes": "payload_bytes", "serialized_bytes": "serialized_dense_bytes",
        "input_bytes_per_step": "input_bytes_per_step", "input_tokens_per_step": "input_tokens_per_step",
        "padded_token_fraction": "padded_token_fraction", "kernel_note": "kernel_note",
        "codec_s_per_step": "codec_s_per_step", "codec_elements": "codec_elements",
    }  # fmt: skip
    assert set(columns) <= {c.name for c in TRIAL_COLUMNS}


def _result(metrics: dict) -> RankResult:
    memory = MemoryPeaks(rss_end=1, rss_peak=1, rss_peak_method="kernel-VmHWM", cuda_max_allocated=None,
                         cuda_max_reserved=None, nvml_process_used=None, nvml_device_used=None)  # fmt: skip
    window = WindowResult(step_times_s=[0.1], memory=memory, comm_records=[], comm_summary=None, wire=None)
    return RankResult(rank=0, window=window, tokens_per_step=None, accuracy=Accuracy(), metrics=metrics,
                      analytic_ops=None, parallel=Parallel(dp=1))  # fmt: skip


def test_the_parent_checks_every_rank_against_the_trials_declarations() -> None:
    cfg = TrialConfig(suite="t", strategy="prune_l1", model="gpt2-tiny", workload="infer")
    assert {"sparsity_pruned", "model_bytes", "model_params"} <= set(declared_metrics(cfg))
    check_metrics(cfg, [_result({"sparsity_pruned": 0.5, "model_bytes": 10})])
    with pytest.raises(TypeError, match=r"undeclared metric\(s\) powersgd_iter"):
        check_metrics(cfg, [_result({"powersgd_iter": 3})])  # another strategy's metric
    with pytest.raises(TypeError, match="declared int, got str"):
        check_metrics(cfg, [_result({"model_bytes": "10"})])


def test_a_rank_with_an_undeclared_metric_fails_its_trial_as_a_contract(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from bench.distributed.launch import LaunchResult
    from bench.runner import trial

    output = _result({"model_params": 1, "_scratch": []}).to_dict()
    fake = LaunchResult(outputs={0: output}, error=None, failed_rank=None, wall_s=1.0, launcher_cpu_s=0.0, log_dir=str(tmp_path))
    monkeypatch.setattr(trial, "launch", lambda *a, **k: fake)
    cfg = TrialConfig(suite="t", strategy="baseline", model="gpt2-tiny", workload="train")
    row, comm = trial.run_trial(cfg, "run", [], tmp_path)
    assert row is not None and row["status"] == "failed" and row["error_class"] == "contract"
    assert "undeclared metric(s) _scratch" in row["error"] and comm == []

"""The package's shape: rooms depend one way, registries discover their members, contracts are strict."""

from __future__ import annotations

import ast
import dataclasses
from collections import defaultdict
from pathlib import Path

import pytest

from bench.contracts import Accuracy, MemoryPeaks, Parallel, RankResult, RankSkipped, WindowResult, rank_output_from_dict

PACKAGE = Path(__file__).resolve().parents[2] / "bench"


def room_imports() -> dict[str, set[str]]:
    """Room (subpackage of bench) -> the other rooms its modules import, read with `ast`."""
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    edges: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).parts
        if len(parts) < 2:
            continue  # top-level modules (contracts, config, registry, ...) are neutral
        src = parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                bits = name.split(".")
                if bits[0] == "bench" and len(bits) > 1 and bits[1] in rooms and bits[1] != src:
                    edges[src].add(bits[1])
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One dependency cycle between rooms, as a path, or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_no_import_cycle_between_rooms() -> None:
    edges = room_imports()
    assert "strategies" in edges and "workloads" in edges["runner"]  # the walk sees real imports
    assert find_cycle(edges) is None, f"import cycle between bench/ rooms: {' -> '.join(find_cycle(edges) or [])}"


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_comm_is_measurement_only() -> None:
    """`comm/` holds accounting, wire, profile and the cost model: it imports no technique or driver."""
    assert room_imports().get("comm", set()) <= {"comm"}


@pytest.mark.parametrize(
    ("model", "blocks"), [("gpt2-tiny", 2), ("bert-tiny", 2), ("llama-tiny", 2), ("gpt2-small", 6)]
)
def test_model_spec_finds_the_transformer_blocks(model: str, blocks: int) -> None:
    from bench.models.zoo import MODELS, build_model

    spec = MODELS.get(model)
    found = spec.blocks(build_model(spec, seed=0))
    assert len(found) == blocks == spec.config.num_hidden_layers
    assert all(type(b) is type(found[0]) for b in found) and "Attention" in str(found[0])


def _window() -> WindowResult:
    memory = MemoryPeaks(
        rss_end=1, rss_peak=2, rss_peak_method="kernel-VmHWM", cuda_max_allocated=None, cuda_max_reserved=None,
        nvml_process_used=None, nvml_device_used=None, null_reasons={"cuda_max_allocated": "CPU trial"},
    )  # fmt: skip
    return WindowResult(step_times_s=[0.1, 0.2], memory=memory, comm_records=[], comm_summary=None, wire=None)


def test_rank_results_cross_the_process_boundary_intact() -> None:
    result = RankResult(
        rank=1, window=_window(), tokens_per_step=64, accuracy=Accuracy(eval_loss=1.5), metrics={"k": 1},
        analytic_ops={"all_reduce": 8.0}, parallel=Parallel(dp=2),
    )  # fmt: skip
    assert rank_output_from_dict(result.to_dict()) == result
    skipped = RankSkipped(rank=0, reason="no GPU")
    assert rank_output_from_dict(skipped.to_dict()) == skipped


def test_a_misspelt_field_fails_at_the_boundary() -> None:
    d = RankResult(
        rank=0, window=_window(), tokens_per_step=None, accuracy=Accuracy(), metrics={}, analytic_ops=None,
        parallel=Parallel(dp=1),
    ).to_dict()  # fmt: skip
    d["accuracy"]["eval_los"] = 1.0
    with pytest.raises(TypeError, match="Accuracy: unknown field"):
        rank_output_from_dict(d)
    d = RankSkipped(rank=0, reason="x").to_dict() | {"reson": "typo"}
    with pytest.raises(TypeError, match="unknown field"):
        rank_output_from_dict(d)
    with pytest.raises(TypeError):
        Accuracy(eval_los=1.0)  # type: ignore[call-arg]


def test_every_accuracy_field_is_a_result_column() -> None:
    from bench.storage.schema import TRIAL_COLUMNS

    columns = {c.name for c in TRIAL_COLUMNS}
    assert {f.name for f in dataclasses.fields(Accuracy)} - {"protocol", "null_reasons"} <= columns
    assert "accuracy_protocol" in columns  # where `protocol` goes


def test_a_rank_result_that_breaks_the_contract_fails_its_trial_not_the_sweep(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A rank running other code than the parent (or a typo) gives a failed row with the field named."""
    from bench.contracts import TrialConfig
    from bench.distributed.launch import LaunchResult
    from bench.runner import trial

    broken = RankSkipped(rank=0, reason="x").to_dict() | {"reson": "typo"}
    fake = LaunchResult(outputs={0: broken}, error=None, failed_rank=None, wall_s=1.0, launcher_cpu_s=0.0, log_dir=str(tmp_path))
    monkeypatch.setattr(trial, "launch", lambda *a, **k: fake)
    cfg = TrialConfig(suite="t", strategy="baseline", model="gpt2-tiny", workload="train")
    row, comm = trial.run_trial(cfg, "run", [], tmp_path)
    assert row["status"] == "failed" and "unknown field(s) reson" in row["error"] and comm == []

"""Workload names -> their per-rank `run(cfg, composition, env) -> dict` functions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.registry import Registry


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    summary: str
    module: str  # imported lazily in the rank: keeps `commbench list` fast
    needs_model: bool = True

    def runner(self) -> Callable[..., dict[str, Any]]:
        import importlib

        return importlib.import_module(self.module).run


WORKLOADS: Registry[Workload] = Registry("workload")
for _w in (
    Workload("train", "forward/backward/optimizer steps under DDP (or the strategy's layout)", "bench.workloads.train"),
    Workload("infer", "forward latency at batch x seq, plus greedy generate tokens/s for causal LMs", "bench.workloads.infer"),
    Workload(
        "transfer",
        "rank 0 broadcasts the (compressed) model state; bytes vs its serialized size",
        "bench.workloads.transfer",
    ),
    Workload(
        "collectives",
        "one collective per step (options.op, options.size_bytes): logical/wire bytes, algbw, busbw",
        "bench.workloads.collectives",
        needs_model=False,
    ),
):
    WORKLOADS.add(_w.name, _w)

"""Gradient accumulation: all-reduce once per k micro-batches, with DDP's `no_sync()`."""

from __future__ import annotations

from dataclasses import dataclass

from bench.strategies import STRATEGIES
from bench.strategies.base import Phase, Strategy, TrialState


@dataclass(kw_only=True, slots=True, frozen=True)
class AccumParams:
    k: int = 4  # micro-batches per optimizer step

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError("k must be >= 1")


@STRATEGIES.register("grad_accum")
class GradAccum(Strategy):
    """k micro-batches per optimizer step; DDP skips the all-reduce on the first k-1 (`no_sync`).

    A step here is one optimizer step over k micro-batches of `batch_size`, so bytes per
    step equal the baseline's while tokens per step are k times larger: compare bytes per
    token (or tokens/s), not bytes per step.
    """

    name = "grad_accum"
    summary = "gradient accumulation: no_sync() for k-1 of every k micro-batches (k x fewer bytes per token)"
    phase = Phase.LOOP
    Params = AccumParams
    workloads = frozenset({"train"})

    def apply(self, state: TrialState) -> None:
        state.micro_steps = self.params.k
        state.metrics["micro_steps"] = self.params.k

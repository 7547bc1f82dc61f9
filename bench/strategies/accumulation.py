"""Gradient accumulation: all-reduce once per k micro-batches, with DDP's `no_sync()`."""

from __future__ import annotations

from dataclasses import dataclass

from bench.strategies import STRATEGIES
from bench.strategies.base import Aspect, Strategy, TrialState
from bench.strategies.metrics import Metric


@dataclass(kw_only=True, slots=True, frozen=True)
class AccumParams:
    k: int = 4  # micro-batches per optimizer step

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError("k must be >= 1")


@STRATEGIES.register("grad_accum")
class GradAccum(Strategy):
    """k micro-batches per optimizer step; the layout skips the gradient sync on the first k-1.

    The loop asks the trial state for each micro-batch's context (`TrialState.micro_step`),
    so this works under any layout that offers `skip_sync` (DDP's `no_sync()` today).

    A step here is one optimizer step over k micro-batches of `batch_size`, so bytes per
    step equal the baseline's while tokens per step are k times larger: compare bytes per
    token (or tokens/s), not bytes per step.
    """

    name = "grad_accum"
    summary = "the layout skips the gradient sync on k−1 of every k micro-batches (DDP `no_sync()`): same bytes per optimizer step, k× the tokens"
    aspect = Aspect.LOOP
    Params = AccumParams
    workloads = frozenset({"train"})
    metrics = (Metric("micro_steps", int, "micro-batches", doc="micro-batches per optimizer step"),)

    def apply(self, state: TrialState) -> None:
        state.micro_steps = self.params.k
        state.metrics["micro_steps"] = self.params.k

"""A test-only strategy that raises inside the ranks, to exercise failure handling."""

from __future__ import annotations

from bench.strategies import STRATEGIES
from bench.strategies.base import Aspect, Strategy, TrialState

if "raise_in_rank" not in STRATEGIES:

    @STRATEGIES.register("raise_in_rank")
    class RaiseInRank(Strategy):
        name = "raise_in_rank"
        summary = "test only: raises on rank 1 while the model is being prepared"
        aspect = Aspect.MODEL

        def apply(self, state: TrialState) -> None:
            if state.env.rank == 1:
                raise RuntimeError("deliberate failure from the raise_in_rank test strategy")

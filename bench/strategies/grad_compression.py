"""Gradient compression as DDP communication hooks (torch's own where torch has one)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from bench.comm.cost_model import ddp_ops
from bench.strategies import STRATEGIES
from bench.strategies.base import Phase, Strategy, TrialState

Hook = Callable[[Any, Any], Any]


class CommHookStrategy(Strategy):
    """Base for strategies that register one DDP comm hook on the wrapped model."""

    phase = Phase.COMM
    workloads = frozenset({"train"})
    exclusive = "DDP comm hook"

    def make_hook(self, state: TrialState) -> tuple[Any, Hook]:
        """Return (hook state, hook function) for `DistributedDataParallel.register_comm_hook`."""
        raise NotImplementedError

    def apply(self, state: TrialState) -> None:
        if state.wrapper != "ddp":
            raise RuntimeError(f"{self.name} needs DDP, but the model is wrapped by {state.wrapper}")
        hook_state, hook = self.make_hook(state)
        state.train_module.register_comm_hook(hook_state, hook)
        state.comm_hook = self.name
        state.comm_hook_state = hook_state


@STRATEGIES.register("fp16_compress", aliases=("ddp_fp16_hook",))
class Fp16Compress(CommHookStrategy):
    """torch's `fp16_compress_hook`: cast each bucket to fp16, all-reduce, cast back."""

    name = "fp16_compress"
    summary = "DDP fp16_compress_hook: gradients all-reduced in fp16 (half the bytes)"

    def make_hook(self, state: TrialState) -> tuple[Any, Hook]:
        return None, default_hooks.fp16_compress_hook

    def analytic_ops(self, state: TrialState) -> dict[str, float] | None:
        return ddp_ops(state, wire_dtype_bytes=2)

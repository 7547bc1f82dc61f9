"""The default parallel layout, DistributedDataParallel, and its knobs (bucket size).

`ddp` is the implicit layout of the train workload: a composition that names no other
layout gets it (`Composition.with_defaults`), and it never appears in a canonical name,
so `baseline` is fp32 DDP. Its cost-model adapter, `ddp_analytic_ops`, feeds the pure
`cost_model.ddp_ops` with numbers read off the trial state; the comm-hook strategies
reuse it with their wire dtype.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from torch.nn.parallel import DistributedDataParallel as DDP

from bench.comm.cost_model import ddp_ops
from bench.models.zoo import grad_bytes, grad_dtype_bytes
from bench.strategies import STRATEGIES
from bench.strategies.base import Aspect, Strategy, TrialState

LAYOUT = "layout"  # the exclusive group of strategies that wrap the model for training


def apply_ddp(state: TrialState) -> None:
    """Replicate the model and all-reduce gradients (DDP), with `state.ddp_options`.

    Gradient accumulation skips the all-reduce of every micro-batch but the last through
    DDP's `no_sync()`, offered to the loop as `state.skip_sync`.
    """
    env = state.env
    device_ids = [env.device.index] if env.device.type == "cuda" else None
    ddp = DDP(state.model, device_ids=device_ids, **state.ddp_options)
    state.wrapped, state.wrapper = ddp, "ddp"

    def skip_sync() -> AbstractContextManager[Any]:
        return ddp.no_sync()

    state.skip_sync = skip_sync


def ddp_analytic_ops(state: TrialState, wire_dtype_bytes: int | None = None) -> dict[str, float]:
    """DDP's step traffic for this trial (op -> bytes per rank): gradients at the wire dtype, buffers.

    The gradients' own dtype is read off the model, so a precision strategy that changes
    it (`half`: fp16 parameters, so fp16 gradients) changes the modelled bytes; a comm hook
    names the dtype it casts to (`wire_dtype_bytes`), None: the gradients' own.
    """
    param = grad_dtype_bytes(state.model)
    return ddp_ops(
        grad_bytes(state.model), state.env.world_size, buffer_bytes=state.ddp_buffer_bytes,
        wire_dtype_bytes=wire_dtype_bytes or param, param_dtype_bytes=param,
    )  # fmt: skip


@STRATEGIES.register("ddp")
class DDPLayout(Strategy):
    """DistributedDataParallel: every rank holds the whole model and all-reduces every gradient."""

    name = "ddp"
    summary = "DistributedDataParallel (the default training layout): one all-reduce of every gradient per step"
    aspect = Aspect.LAYOUT
    order = 10  # after the strategies that configure it (bucket_cap_mb)
    workloads = frozenset({"train"})
    exclusive = LAYOUT
    implicit = True

    def apply(self, state: TrialState) -> None:
        apply_ddp(state)

    def analytic_ops(self, state: TrialState) -> dict[str, float] | None:
        return ddp_analytic_ops(state)


@dataclass(kw_only=True, slots=True, frozen=True)
class BucketParams:
    mb: float = 25.0  # DDP's default bucket_cap_mb

    def __post_init__(self) -> None:
        if self.mb <= 0:
            raise ValueError("mb must be > 0")


@STRATEGIES.register("bucket_cap_mb")
class BucketCap(Strategy):
    """DDP `bucket_cap_mb`: smaller buckets start all-reducing earlier in backward (more overlap),
    at the cost of more, smaller collectives. Same bytes, different calls and overlap."""

    name = "bucket_cap_mb"
    summary = "DDP bucket size in MB (default 25): trades collective count for overlap"
    aspect = Aspect.LAYOUT
    order = 0  # configures DDP before the layout wraps the model
    Params = BucketParams
    workloads = frozenset({"train"})
    needs_ddp = True

    def apply(self, state: TrialState) -> None:
        state.ddp_options["bucket_cap_mb"] = self.params.mb

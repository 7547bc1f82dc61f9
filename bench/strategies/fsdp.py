"""Sharded data parallel with FSDP2 (`fully_shard`): ZeRO-3, ZeRO-2, CPU offload and mixed precision.

`apply_fsdp` shards one transformer block at a time (`ModelSpec.blocks`), then the root
(embeddings, final norm, the tied head), as torchtitan does. Each block's parameters are
all-gathered before its forward, and again before its backward when
`reshard_after_forward` (ZeRO-3); gradients are reduce-scattered per block. The root is
never resharded between forward and backward (FSDP2 keeps the root unsharded), so it is
gathered once a step. Gloo has no reduce-scatter of its own: ProcessGroupGloo runs it as
an all_reduce of the whole flat buffer, so on gloo the gradient half costs twice the
textbook wire bytes (the report says so; `cost_model.fsdp_ops` models both).

Gradient accumulation works through `TrialState.skip_sync`: FSDP2's
`set_requires_gradient_sync(False)` for all micro-batches but the last.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from bench.comm.cost_model import fsdp_ops, fsdp_padded_numel
from bench.contracts import Parallel, TrialConfig
from bench.strategies import STRATEGIES
from bench.strategies.base import Aspect, Strategy, TrialState
from bench.strategies.ddp import LAYOUT
from bench.strategies.metrics import Metric

MP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(kw_only=True, slots=True, frozen=True)
class FSDPParams:
    reshard_after_forward: bool = True  # True: ZeRO-3 (params gathered twice a step); False: ZeRO-2
    offload: bool = False  # CPUOffloadPolicy: sharded params, grads and optimizer states live on the host
    mp: Literal["none", "bf16", "fp16"] = "none"  # MixedPrecisionPolicy param dtype (gradients reduced in fp32)


def param_groups(model: nn.Module, blocks: nn.ModuleList) -> list[list[nn.Parameter]]:
    """The parameters of each FSDP group in the order they are sharded: one group per block, then the root."""
    in_blocks = {id(p) for b in blocks for p in b.parameters()}
    root = [p for p in model.parameters() if id(p) not in in_blocks]
    return [list(b.parameters()) for b in blocks] + [root]


def local_shape(p: torch.Tensor) -> tuple[int, ...]:
    """The shape FSDP shards: a tensor-parallel DTensor's local shard, else the parameter itself."""
    to_local = getattr(p, "to_local", None)
    return tuple(to_local().shape) if to_local else tuple(p.shape)


def group_shapes(model: nn.Module, blocks: nn.ModuleList) -> list[list[tuple[int, ...]]]:
    """Shapes of each FSDP group's parameters: what the cost model needs (it pads dim 0 per rank)."""
    return [[local_shape(p) for p in group] for group in param_groups(model, blocks)]


Shapes = list[list[tuple[int, ...]]]


def apply_fsdp(
    state: TrialState, *, reshard_after_forward: bool, offload: bool, mp: str, mesh: Any = None
) -> Shapes:
    """Shard every block, then the root, over `mesh` (default: all ranks); return each group's parameter shapes."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    env = state.env
    mesh = mesh if mesh is not None else init_device_mesh(env.device.type, (env.world_size,), mesh_dim_names=("dp",))
    dtype = MP_DTYPES[mp]
    kwargs: dict[str, Any] = {
        "mesh": mesh,
        "mp_policy": MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32 if dtype else None),
        "offload_policy": CPUOffloadPolicy() if offload else OffloadPolicy(),
    }
    blocks = state.spec.blocks(state.model)
    shapes = group_shapes(state.model, blocks)
    state.metrics["fsdp_group_shapes"] = shapes
    # Unsharded params FSDP2 keeps from forward to backward: the root always, every group under ZeRO-2.
    kept = shapes if not reshard_after_forward else shapes[-1:]
    param_bytes = (dtype or next(state.model.parameters()).dtype).itemsize
    state.metrics["unsharded_param_bytes"] = sum(fsdp_padded_numel(s, mesh.size()) * param_bytes for g in kept for s in g)
    for block in blocks:
        fully_shard(block, reshard_after_forward=reshard_after_forward, **kwargs)
    # The root: FSDP2's own heuristic (None) keeps it unsharded between forward and backward,
    # since its parameters (embeddings, the tied head) are needed again at once.
    fully_shard(state.model, reshard_after_forward=None if reshard_after_forward else False, **kwargs)
    state.wrapped, state.wrapper = state.model, "fsdp"
    state.parallel = Parallel(dp=mesh.size(), tp=state.parallel.tp if state.parallel else 1)

    @contextmanager
    def skip_sync() -> Iterator[None]:
        state.model.set_requires_gradient_sync(False)  # type: ignore[operator]
        try:
            yield
        finally:
            state.model.set_requires_gradient_sync(True)  # type: ignore[operator]

    state.skip_sync = skip_sync
    return shapes


@STRATEGIES.register("fsdp")
class FSDP(Strategy):
    """FSDP2 over every rank: ZeRO-3 by default, `reshard_after_forward=false` for ZeRO-2."""

    name = "fsdp"
    summary = (
        "FSDP2 `fully_shard` per block then the root: ZeRO-3 (reshard_after_forward=false: ZeRO-2), "
        "CPU offload, bf16/fp16 params with fp32 reduction"
    )
    aspect = Aspect.LAYOUT
    order = 20  # after tensor parallel, which builds the 2-D mesh FSDP shards over
    Params = FSDPParams
    workloads = frozenset({"train"})
    exclusive = LAYOUT
    replaces_ddp = True
    metrics = (
        Metric("fsdp_group_shapes", list, doc="shapes of each FSDP group's parameters (blocks, then the root): the cost model's input"),
        Metric("unsharded_param_bytes", int, "B", doc="unsharded params FSDP2 keeps from forward to backward on this rank"),
    )
    group_shapes: Shapes  # set by `apply`, read by the cost model

    def skip_reason(self, cfg: TrialConfig) -> str | None:
        if self.params.offload and cfg.device != "cuda":
            return "CPU offload moves sharded state from the GPU to the host: a CPU trial has nothing to offload"
        if self.params.mp == "fp16" and cfg.device != "cuda":
            return "fp16 mixed precision needs CUDA (CPU fp16 matmul kernels are missing or slow)"
        return None

    def apply(self, state: TrialState) -> None:
        p = self.params
        self.group_shapes = apply_fsdp(
            state, reshard_after_forward=p.reshard_after_forward, offload=p.offload, mp=p.mp, mesh=state.dp_mesh
        )

    def analytic_ops(self, state: TrialState) -> dict[str, float] | None:
        assert state.parallel is not None
        gather_bytes = 4 if self.params.mp == "none" else 2
        return fsdp_ops(
            self.group_shapes,
            state.parallel.dp,
            reshard_after_forward=self.params.reshard_after_forward,
            gather_dtype_bytes=gather_bytes,
            reduce_dtype_bytes=4,
            reduce_as_all_reduce=state.env.backend == "gloo",
            micro_steps=state.micro_steps,
        )

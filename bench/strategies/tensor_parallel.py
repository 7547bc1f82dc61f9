"""Megatron-style tensor parallelism with DTensor: column-wise then row-wise linears in attention and MLP.

Per block, attention's input projections (q/k/v; GPT-2's fused `c_attn`) and the MLP's
first projection(s) are split by output features (`ColwiseParallel`), attention's output
projection and the MLP's last by input features (`RowwiseParallel`), so each rank runs
`heads / tp` heads and `1 / tp` of the MLP, and a block costs one all_reduce of the
activations (b x s x h) after attention and one after the MLP in forward. Backward
all-reduces the input gradient of every column-wise linear separately: Megatron's 4 per
block for GPT-2 (fused q/k/v), but 7 for Llama (q, k, v, gate, up each), measured
exactly (`cost_model.tensor_parallel_ops`).
Embeddings, norms and the tied LM head stay replicated (no loss parallel: the head is
tied to the input embedding in every model here, and splitting it would untie it).

GPT-2 needs two adaptations, both exact: its Conv1D layers become nn.Linear (the same
math, transposed weight), and the fused q/k/v rows are permuted so that each rank's
column shard holds its own heads' q, k and v; `attn.split_size` is then set to the local
width. Llama's attention already reshapes with -1 heads.

With `fsdp` in the same composition, the world is a 2-D mesh (dp = world / tp, tp) and
FSDP shards over the dp dimension (torchtitan's order: TP first, then FSDP).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bench.comm.cost_model import tensor_parallel_ops
from bench.contracts import Parallel, TrialConfig
from bench.errors import BenchError
from bench.strategies import STRATEGIES
from bench.strategies.base import Phase, Strategy, TrialState
from bench.strategies.layers import convert_conv1d

# Module names inside one block -> "colwise" | "rowwise", per model family.
PLANS: dict[str, dict[str, str]] = {
    "gpt2": {"attn.c_attn": "colwise", "attn.c_proj": "rowwise", "mlp.c_fc": "colwise", "mlp.c_proj": "rowwise"},
    "llama": {
        "self_attn.q_proj": "colwise", "self_attn.k_proj": "colwise", "self_attn.v_proj": "colwise",
        "self_attn.o_proj": "rowwise", "mlp.gate_proj": "colwise", "mlp.up_proj": "colwise", "mlp.down_proj": "rowwise",
    },
}  # fmt: skip


@dataclass(kw_only=True, slots=True, frozen=True)
class TPParams:
    tp: int = 0  # tensor-parallel degree; 0: every rank

    def __post_init__(self) -> None:
        if self.tp < 0:
            raise ValueError("tp must be >= 0 (0: the world size)")


def degree(tp: int, world_size: int) -> int:
    return tp or world_size


def interleave_qkv(linear: nn.Linear, tp: int) -> None:
    """Permute GPT-2's fused q/k/v output rows to [q_0 k_0 v_0 | q_1 k_1 v_1 | ...], one group per rank."""
    hidden = linear.out_features // 3
    width = hidden // tp
    order = [part * hidden + r * width + i for r in range(tp) for part in range(3) for i in range(width)]
    index = torch.tensor(order, device=linear.weight.device)
    with torch.no_grad():
        linear.weight.copy_(linear.weight[index])
        if linear.bias is not None:
            linear.bias.copy_(linear.bias[index])


def prepare_gpt2(model: nn.Module, blocks: nn.ModuleList, tp: int) -> None:
    convert_conv1d(model)
    for block in blocks:
        interleave_qkv(block.attn.c_attn, tp)
        block.attn.split_size = block.attn.embed_dim // tp
        block.attn.num_heads //= tp


def apply_tensor_parallel(state: TrialState, tp: int, *, data_parallel: bool) -> None:
    """Parallelise every block over a tp mesh (2-D (dp, tp) when `data_parallel`, for FSDP to shard over dp)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    env, spec = state.env, state.spec
    dp = env.world_size // tp
    if data_parallel:
        mesh = init_device_mesh(env.device.type, (dp, tp), mesh_dim_names=("dp", "tp"))
        tp_mesh, state.dp_mesh = mesh["tp"], mesh["dp"]
    else:
        tp_mesh = init_device_mesh(env.device.type, (tp,), mesh_dim_names=("tp",))
    blocks = spec.blocks(state.model)
    if spec.family == "gpt2":
        prepare_gpt2(state.model, blocks, tp)
    styles = {"colwise": ColwiseParallel, "rowwise": RowwiseParallel}
    plan = {name: styles[kind]() for name, kind in PLANS[spec.family].items()}
    for block in blocks:
        parallelize_module(block, tp_mesh, plan)
    state.parallel = Parallel(dp=dp, tp=tp)
    state.data_rank = env.rank // tp  # the mesh is (dp, tp), row-major: one batch per tp group
    state.wrapped, state.wrapper = state.model, "tensor_parallel"
    kinds = list(PLANS[spec.family].values())
    state.metrics["tp_activation"] = {
        "batch": state.cfg.batch_size, "seq": state.cfg.seq_len, "hidden": int(spec.config.hidden_size),
        "layers": len(blocks), "colwise": kinds.count("colwise"), "rowwise": kinds.count("rowwise"),
    }  # fmt: skip


@STRATEGIES.register("tensor_parallel")
class TensorParallel(Strategy):
    """Megatron tensor parallelism over `tp` ranks (all of them by default); with `fsdp`, a 2-D layout."""

    name = "tensor_parallel"
    summary = "DTensor Megatron TP: colwise/rowwise attention and MLP, an activation all-reduce per row-wise linear (fwd) and per column-wise linear (bwd); with fsdp: 2-D"
    phase = Phase.LAYOUT
    order = 5  # before fsdp, which shards over the dp half of the mesh TP builds
    Params = TPParams
    workloads = frozenset({"train"})
    replaces_ddp = True

    def check(self, cfg: TrialConfig, others: list[str]) -> None:
        from bench.models.zoo import MODELS

        spec = MODELS.get(cfg.model)
        tp = degree(self.params.tp, cfg.world_size)
        if spec.family not in PLANS:
            raise BenchError(f"tensor_parallel has plans for {', '.join(PLANS)} models, not {cfg.model}")
        if cfg.world_size % tp:
            raise BenchError(f"tensor_parallel: tp={tp} does not divide world_size={cfg.world_size}")
        if tp < cfg.world_size and "fsdp" not in others:
            raise BenchError(
                f"tensor_parallel: tp={tp} x dp={cfg.world_size // tp} must multiply to world_size={cfg.world_size}, "
                "and the dp dimension needs a data-parallel layout: compose with fsdp (tensor_parallel(tp=2)+fsdp)"
            )
        if tp == cfg.world_size and "fsdp" in others:
            raise BenchError(f"tensor_parallel: tp={tp} uses every rank, leaving dp=1 for fsdp; set tp below the world size")
        heads = spec.config.num_attention_heads
        kv = getattr(spec.config, "num_key_value_heads", heads)
        if heads % tp or kv % tp:
            raise BenchError(f"tensor_parallel: tp={tp} must divide {cfg.model}'s {heads} heads and {kv} key/value heads")

    def apply(self, state: TrialState) -> None:
        tp = degree(self.params.tp, state.env.world_size)
        apply_tensor_parallel(state, tp, data_parallel=tp < state.env.world_size)

    def analytic_ops(self, state: TrialState) -> dict[str, float] | None:
        act: dict[str, Any] = state.metrics["tp_activation"]
        return tensor_parallel_ops(**act, micro_steps=state.micro_steps)

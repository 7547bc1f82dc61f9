"""Megatron-style tensor parallelism with DTensor: column-wise then row-wise linears in attention and MLP.

Per block, attention's input projections (q/k/v; GPT-2's fused `c_attn`) and the MLP's
first projection(s) are split by output features (`ColwiseParallel`), attention's output
projection and the MLP's last by input features (`RowwiseParallel`), so each rank runs
`heads / tp` heads and `1 / tp` of the MLP, and a block costs one all_reduce of the
activations (b x s x h) after attention and one after the MLP in forward. Backward
all-reduces the input gradient of every column-wise linear separately: Megatron's 4 per
block for GPT-2 (fused q/k/v), but 7 for Llama (q, k, v, gate, up each), measured
exactly (`cost_model.tensor_parallel_ops`). Embeddings, norms and the tied LM head stay
replicated.

`sp=true` (sequence parallel, Megatron-LM's): between blocks the residual stream and the
norms are sharded on the sequence dim (`SequenceParallel`); attention and the MLP all-gather
their input (`PrepareModuleInput`) and the row-wise linears reduce-scatter their output, so a
block moves 4 all-gathers + 4 reduce-scatters of b x s x h for Llama too (the gather's
backward sums q/k/v's partial gradients before one reduce-scatter). HF derives positions and
the causal mask from the embedding's length, so the embedding stays full-length and the
first block keeps its slice (a pre-hook); the norms' weight gradients are partial over the
slices and are all-reduced once each.

`loss_parallel=true`: the LM head is column-wise on the vocab dim with DTensor logits, and the
step's cross-entropy and backward run inside `loss_parallel()` (`TrialState.loss_context`), so
no rank holds b x s x vocab logits. The head is tied to the embedding in every model here, so
the embedding is vocab-parallel too (row-wise on the same [vocab, h] weight, Megatron's
`VocabParallelEmbedding`) and the two stay one parameter, sharded once.

GPT-2 needs two adaptations, both exact: its Conv1D layers become nn.Linear (the same
math, transposed weight), and the fused q/k/v rows are permuted so that each rank's
column shard holds its own heads' q, k and v; `attn.split_size` is then set to the local
width. Llama's attention already reshapes with -1 heads.

With `fsdp` in the same composition, the world is a 2-D mesh (dp = world / tp, tp) and
FSDP shards over the dp dimension (torchtitan's order: TP first, then FSDP).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bench.comm.cost_model import tensor_parallel_ops
from bench.contracts import Parallel, TrialConfig
from bench.errors import BenchError
from bench.strategies import STRATEGIES
from bench.strategies.base import Aspect, Strategy, TrialState
from bench.strategies.layers import convert_conv1d
from bench.strategies.metrics import Metric

# Module names inside one block -> "colwise" | "rowwise", per model family.
PLANS: dict[str, dict[str, str]] = {
    "gpt2": {"attn.c_attn": "colwise", "attn.c_proj": "rowwise", "mlp.c_fc": "colwise", "mlp.c_proj": "rowwise"},
    "llama": {
        "self_attn.q_proj": "colwise", "self_attn.k_proj": "colwise", "self_attn.v_proj": "colwise",
        "self_attn.o_proj": "rowwise", "mlp.gate_proj": "colwise", "mlp.up_proj": "colwise", "mlp.down_proj": "rowwise",
    },
}  # fmt: skip


# What sequence and loss parallel touch outside the blocks' linears, per model family.
@dataclass(frozen=True, slots=True)
class Edges:
    embed: str  # the token embedding, tied to the LM head in every model here
    final_norm: str
    head: str
    norms: tuple[str, str]  # inside a block: before attention, before the MLP
    attn: str
    mlp: str
    attn_kwarg: str | None  # attention's hidden states come as this keyword (Llama); None: first positional (GPT-2)


EDGES: dict[str, Edges] = {
    "gpt2": Edges("transformer.wte", "transformer.ln_f", "lm_head", ("ln_1", "ln_2"), "attn", "mlp", None),
    "llama": Edges("model.embed_tokens", "model.norm", "lm_head", ("input_layernorm", "post_attention_layernorm"),
                   "self_attn", "mlp", "hidden_states"),
}  # fmt: skip


@dataclass(kw_only=True, slots=True, frozen=True)
class TPParams:
    tp: int = 0  # tensor-parallel degree; 0: every rank
    # Sequence parallel: between blocks the residual stream and the norms are sharded on the sequence dim.
    sp: bool = False
    # Loss parallel: vocab-parallel embedding and LM head (tied), cross-entropy on vocab-sharded logits.
    loss_parallel: bool = False

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


def block_plan(family: str, *, sp: bool) -> dict[str, Any]:
    """One block's DTensor plan: colwise/rowwise linears; with `sp`, sequence-sharded norms around them.

    Under sequence parallel a row-wise linear reduce-scatters its output onto the sequence
    dim (instead of all-reducing it), and attention and the MLP all-gather their input back
    from it (`PrepareModuleInput`, kept a DTensor so that the column-wise linears' partial
    input gradients add up before one reduce-scatter in backward: Megatron's `g`).
    """
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import ColwiseParallel, PrepareModuleInput, RowwiseParallel, SequenceParallel

    def style(kind: str) -> Any:
        if kind == "colwise":
            return ColwiseParallel()
        return RowwiseParallel(output_layouts=Shard(1)) if sp else RowwiseParallel()

    plan: dict[str, Any] = {name: style(kind) for name, kind in PLANS[family].items()}
    if not sp:
        return plan
    e = EDGES[family]
    gather = PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),))
    if e.attn_kwarg:  # Llama's decoder layer passes attention its hidden states by keyword
        kw = e.attn_kwarg
        plan[e.attn] = PrepareModuleInput(input_kwarg_layouts={kw: Shard(1)}, desired_input_kwarg_layouts={kw: Replicate()})
    else:
        plan[e.attn] = gather
    plan[e.mlp] = PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),))
    for norm in e.norms:
        plan[norm] = SequenceParallel()
    return plan


def edge_plan(family: str, *, sp: bool, loss_parallel: bool) -> dict[str, Any]:
    """The model-level plan around the blocks: final norm and LM head under `sp`, embedding and head under `loss_parallel`.

    HF builds positions and the causal mask from the embedding's output length, so the
    embedding stays full-length (the first block scatters it, `scatter_sequence`). Loss
    parallel shards the tied embedding/LM-head weight on its vocab dim for both uses (row-wise
    for the lookup: a masked partial sum, one all-reduce; column-wise for the head: logits
    stay a DTensor sharded on vocab, for `loss_parallel()`'s cross-entropy).
    """
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import ColwiseParallel, PrepareModuleInput, RowwiseParallel, SequenceParallel

    e = EDGES[family]
    plan: dict[str, Any] = {}
    if sp:
        plan[e.final_norm] = SequenceParallel()
    head_in = Shard(1) if sp else Replicate()
    if loss_parallel:
        plan[e.embed] = RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate())
        plan[e.head] = ColwiseParallel(input_layouts=head_in, output_layouts=Shard(-1), use_local_output=False)
    elif sp:  # a replicated head: gather the sequence back before it
        plan[e.head] = PrepareModuleInput(input_layouts=(head_in,), desired_input_layouts=(Replicate(),), use_local_output=True)
    return plan


def scatter_sequence(mesh: Any) -> Callable[[nn.Module, tuple[Any, ...]], tuple[Any, ...]]:
    """A forward pre-hook: keep this rank's slice of the (replicated) hidden states on the sequence dim.

    No traffic forward; backward all-gathers the slices' gradients for the replicated embedding.
    """
    from torch.distributed.tensor import DTensor, Replicate, Shard

    def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = DTensor.from_local(args[0], mesh, (Replicate(),), run_check=False)
        return (x.redistribute(mesh, (Shard(1),)).to_local(), *args[1:])

    return hook


def reduce_partial(grad: Any) -> Any:
    """A sequence-parallel norm's weight gradient comes out partial (each rank saw its slice of the
    sequence): all-reduce it once here, or AdamW would all-reduce it again for every op that reads it."""
    from torch.distributed.tensor import DTensor, Replicate

    if isinstance(grad, DTensor) and any(pl.is_partial() for pl in grad.placements):
        return grad.redistribute(placements=[Replicate()] * len(grad.placements))
    return grad


def tie_head(model: nn.Module, e: Edges) -> None:
    """Re-tie the LM head to the embedding: both plans shard the same [vocab, h] weight on dim 0, as one parameter."""
    embed, head = model.get_submodule(e.embed), model.get_submodule(e.head)
    head.weight = embed.weight


def apply_tensor_parallel(state: TrialState, p: TPParams, *, data_parallel: bool) -> dict[str, Any]:
    """Parallelise every block over a tp mesh (2-D (dp, tp) when `data_parallel`, for FSDP to shard over dp).

    Returns the shapes and counts the cost model needs (`cost_model.tensor_parallel_ops`).
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import loss_parallel, parallelize_module

    env, spec = state.env, state.spec
    tp = degree(p.tp, env.world_size)
    dp = env.world_size // tp
    if data_parallel:
        mesh = init_device_mesh(env.device.type, (dp, tp), mesh_dim_names=("dp", "tp"))
        tp_mesh, state.dp_mesh = mesh["tp"], mesh["dp"]
    else:
        tp_mesh = init_device_mesh(env.device.type, (tp,), mesh_dim_names=("tp",))
    blocks = spec.blocks(state.model)
    if spec.family == "gpt2":
        prepare_gpt2(state.model, blocks, tp)
    for block in blocks:
        parallelize_module(block, tp_mesh, block_plan(spec.family, sp=p.sp))
    parallelize_module(state.model, tp_mesh, edge_plan(spec.family, sp=p.sp, loss_parallel=p.loss_parallel))
    if p.sp:
        blocks[0].register_forward_pre_hook(scatter_sequence(tp_mesh))
        e = EDGES[spec.family]
        for norm in [block.get_submodule(n) for block in blocks for n in e.norms] + [state.model.get_submodule(e.final_norm)]:
            for param in norm.parameters():
                param.register_hook(reduce_partial)
    if p.loss_parallel:
        tie_head(state.model, EDGES[spec.family])
        state.loss_context = loss_parallel
        state.model.register_forward_hook(local_loss)
        state.eval_batch = eval_under(state)
    state.parallel = Parallel(dp=dp, tp=tp)
    state.data_rank = env.rank // tp  # the mesh is (dp, tp), row-major: one batch per tp group
    state.wrapped, state.wrapper = state.model, "tensor_parallel"
    kinds = list(PLANS[spec.family].values())
    cfg = spec.config
    activation = state.metrics["tp_activation"] = {
        "batch": state.cfg.batch_size, "seq": state.cfg.seq_len, "hidden": int(cfg.hidden_size),
        "layers": len(blocks), "colwise": kinds.count("colwise"), "rowwise": kinds.count("rowwise"),
        "sp": p.sp, "loss_parallel": p.loss_parallel,
        "norm_params": norm_params(state.model, EDGES[spec.family], blocks[0]) if p.sp else (0, 0),
    }  # fmt: skip
    return activation


def local_loss(module: nn.Module, args: Any, output: Any) -> None:
    """Forward hook: `loss_parallel()`'s loss is a replicated DTensor; the loop wants a plain tensor (same value)."""
    from torch.distributed.tensor import DTensor

    loss = getattr(output, "loss", None)
    if isinstance(loss, DTensor):
        output.loss = loss.full_tensor()


def eval_under(state: TrialState) -> Callable[[Any], float | None]:
    """Held-out loss on vocab-sharded logits: the cross-entropy must run inside `loss_parallel()` too."""
    device, model = state.env.device, state.model

    def loss_of(batch: Any) -> float | None:
        with torch.no_grad(), state.loss_scope():
            return float(model(input_ids=batch.input_ids.to(device), labels=batch.labels.to(device)).loss)

    return loss_of


def norm_params(model: nn.Module, e: Edges, block: nn.Module) -> tuple[int, int]:
    """Elements of one block's sequence-parallel norms, and of the final norm (their gradients are all-reduced)."""
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return sum(count(block.get_submodule(n)) for n in e.norms), count(model.get_submodule(e.final_norm))


@STRATEGIES.register("tensor_parallel")
class TensorParallel(Strategy):
    """Megatron tensor parallelism over `tp` ranks (all of them by default), optionally sequence and loss parallel; with `fsdp`, a 2-D layout."""

    name = "tensor_parallel"
    summary = (
        "DTensor Megatron TP: colwise/rowwise attention and MLP, an activation all-reduce per row-wise linear (fwd) and "
        "per column-wise linear (bwd); sp: sequence-parallel norms, an all-gather + reduce-scatter per all-reduce; "
        "loss_parallel: vocab-parallel tied embedding and head, loss on vocab-sharded logits; with fsdp: 2-D"
    )
    aspect = Aspect.LAYOUT
    order = 5  # before fsdp, which shards over the dp half of the mesh TP builds
    Params = TPParams
    workloads = frozenset({"train"})
    replaces_ddp = True
    metrics = (Metric("tp_activation", dict, doc="the shapes and counts of the cost model (`cost_model.tensor_parallel_ops`)"),)
    activation: dict[str, Any]  # set by `apply`, read by the cost model

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
        if self.params.sp and cfg.seq_len % tp:
            raise BenchError(f"tensor_parallel: sp=true shards the sequence: tp={tp} must divide seq_len={cfg.seq_len}")
        if self.params.loss_parallel and spec.vocab_size % tp:
            raise BenchError(
                f"tensor_parallel: loss_parallel=true shards the vocabulary: tp={tp} must divide {cfg.model}'s vocab of {spec.vocab_size}"
            )
        heads = spec.config.num_attention_heads
        kv = getattr(spec.config, "num_key_value_heads", heads)
        if heads % tp or kv % tp:
            raise BenchError(f"tensor_parallel: tp={tp} must divide {cfg.model}'s {heads} heads and {kv} key/value heads")

    def apply(self, state: TrialState) -> None:
        tp = degree(self.params.tp, state.env.world_size)
        self.activation = apply_tensor_parallel(state, self.params, data_parallel=tp < state.env.world_size)

    def analytic_ops(self, state: TrialState) -> dict[str, float] | None:
        return tensor_parallel_ops(
            **self.activation, micro_steps=state.micro_steps, reduce_scatter_as_all_reduce=state.env.backend == "gloo"
        )

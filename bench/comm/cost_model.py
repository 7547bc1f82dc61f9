"""Analytic communication cost: the oracle that measured bytes are checked against.

Per collective: the message size S (nccl-tests' convention), bytes each rank sends and
receives under the textbook ring algorithm, and the algorithm/bus bandwidth definitions
of nccl-tests' doc/PERFORMANCE.md:

    algbw = S / t
    busbw = algbw * 2(n-1)/n   all_reduce
          = algbw * (n-1)/n    all_gather, reduce_scatter, all_to_all
          = algbw * 1          broadcast, reduce, send/recv

For all_gather and reduce_scatter S is the *total* array size (per-rank count x element
size x n).

Where gloo's implementation differs from the textbook, `wire(...)` models gloo itself and
`GLOO_NOTES` says how: ProcessGroupGloo runs reduce_scatter as an all_reduce of the whole
input (2(n-1)/n S per rank on the wire instead of (n-1)/n S), and broadcast as the root
sending the buffer to every other rank (the root sends (n-1) S; others send nothing).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Algorithm = Literal["ring", "gloo"]

BUS_FACTOR = {
    "all_reduce": lambda n: 2 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "all_to_all": lambda n: (n - 1) / n,
    "broadcast": lambda n: 1.0,
    "reduce": lambda n: 1.0,
    "send": lambda n: 1.0,
    "recv": lambda n: 1.0,
}

GLOO_NOTES = {
    "reduce_scatter": "gloo runs reduce_scatter as all_reduce of the whole input, then keeps this rank's "
    "shard: 2(n-1)/n x S on the wire per rank instead of the ring's (n-1)/n x S, and the flight "
    "recorder logs it as all_reduce",
    "broadcast": "gloo's broadcast sends the whole buffer from the root to each rank: the root sends "
    "(n-1) x S, the others send nothing (same total as a pipelined ring, all of it on one rank)",
    "all_reduce": "gloo's ring all_reduce (reduce-scatter + all-gather): 2(n-1)/n x S per rank, like NCCL's ring",
    "all_gather": "gloo's ring all_gather: (n-1)/n x S per rank, like NCCL's ring",
}


def bus_factor(op: str, n: int) -> float:
    return BUS_FACTOR[op](n) if n > 1 else 0.0


def algbw(msg_bytes: float, seconds: float) -> float:
    """Algorithm bandwidth in bytes/s: S / t."""
    return msg_bytes / seconds


def busbw(op: str, msg_bytes: float, seconds: float, n: int) -> float:
    """Bus bandwidth in bytes/s: algbw scaled so it is comparable across ops and world sizes."""
    return algbw(msg_bytes, seconds) * bus_factor(op, n)


@dataclass(frozen=True, slots=True)
class WireCost:
    """Bytes one collective puts on the wire, summed over all ranks and per rank (received)."""

    op: str
    n: int
    msg_bytes: int
    total: float  # sum over ranks of bytes received
    per_rank: tuple[float, ...]  # bytes received by each rank (rank 0 is the root where there is one)


def wire(op: str, msg_bytes: int, n: int, algorithm: Algorithm = "ring", root: int = 0) -> WireCost:
    """Modelled received bytes for one collective of nccl-tests size `msg_bytes` over `n` ranks.

    Per rank, received: all_reduce 2(n-1)/n S (ring: reduce-scatter then all-gather);
    all_gather and all_to_all (n-1)/n S; reduce_scatter (n-1)/n S on a ring, 2(n-1)/n S on
    gloo (an all_reduce); broadcast S on every rank but the root; reduce S at the root;
    gather (n-1)/n S at the root; scatter S/n on every rank but the root.
    """
    s = float(msg_bytes)
    f = (n - 1) / n if n > 1 else 0.0
    everyone = {
        "all_reduce": 2 * f * s,
        "all_gather": f * s,
        "all_to_all": f * s,
        "reduce_scatter": (2 * f if algorithm == "gloo" else f) * s,
        "barrier": 0.0,
    }
    at_root = {"reduce": s, "gather": f * s}
    off_root = {"broadcast": s, "scatter": s / n}
    if n <= 1:
        per = [0.0]
    elif op in everyone:
        per = [everyone[op]] * n
    elif op in at_root:
        per = [at_root[op] if r == root else 0.0 for r in range(n)]
    elif op in off_root:
        per = [0.0 if r == root else off_root[op] for r in range(n)]
    elif op in ("send", "recv"):
        per = [s] + [0.0] * (n - 1)  # the receiving side; the caller knows which rank that is
    else:
        raise ValueError(f"no wire model for {op!r}")
    return WireCost(op, n, int(msg_bytes), sum(per), tuple(per))


# --- whole-step models for strategy families ------------------------------------------


def ddp_step(
    grad_bytes: int, n: int, *, buffer_bytes: int = 0, wire_dtype_bytes: int = 4, param_dtype_bytes: int = 4
) -> dict[str, float]:
    """DDP: one all_reduce of every gradient per step, plus a broadcast of the buffers.

    Gradients go at the wire dtype (fp16 hooks halve them): logical all_reduce bytes per
    rank = grad_bytes * wire/param dtype size, received per rank 2(n-1)/n of that (ring).
    With `broadcast_buffers=True` (the default) DDP also broadcasts every module buffer
    from rank 0 before each forward (e.g. BERT's int64 position_ids): `buffer_bytes`.
    """
    reduce = grad_bytes * wire_dtype_bytes / param_dtype_bytes
    f = (n - 1) / n if n > 1 else 0.0
    return {
        "all_reduce": reduce,
        "broadcast": float(buffer_bytes),
        "logical": reduce + buffer_bytes,
        "wire_per_rank": 2 * f * reduce + f * buffer_bytes,
    }


def ddp_ops(
    grad_bytes: int, n: int, *, buffer_bytes: int = 0, wire_dtype_bytes: int = 4, param_dtype_bytes: int = 4
) -> dict[str, float]:
    """`ddp_step` as op -> message bytes per rank per step, leaving out ops that carry nothing."""
    m = ddp_step(
        grad_bytes, n, buffer_bytes=buffer_bytes, wire_dtype_bytes=wire_dtype_bytes, param_dtype_bytes=param_dtype_bytes
    )
    return {op: m[op] for op in ("all_reduce", "broadcast") if m[op]}


def fsdp_step(param_bytes: int, n: int, algorithm: Algorithm = "ring") -> dict[str, float]:
    """FSDP/ZeRO-3: all_gather params in forward and backward, reduce_scatter grads.

    Ring wire per rank: 3 x (n-1)/n x Psi, versus DDP's 2 x (n-1)/n x Psi. On gloo the
    reduce_scatter is an all_reduce, so it costs 4 x (n-1)/n x Psi instead.
    """
    f = (n - 1) / n if n > 1 else 0.0
    rs = 2 * f if algorithm == "gloo" else f
    return {
        "all_gather": 2 * param_bytes,
        "reduce_scatter": param_bytes,
        "logical": 3 * param_bytes,
        "wire_per_rank": (2 * f + rs) * param_bytes,
    }


def fsdp_padded_numel(shape: tuple[int, ...], n: int) -> int:
    """Elements FSDP2 moves for one parameter sharded on dim 0 over `n` ranks: dim 0 padded to a multiple of n."""
    if not shape:
        return n  # a scalar is sharded as one element per rank
    rest = 1
    for d in shape[1:]:
        rest *= d
    return math.ceil(shape[0] / n) * n * rest


def fsdp_ops(
    groups: list[list[tuple[int, ...]]],
    n: int,
    *,
    reshard_after_forward: bool,
    gather_dtype_bytes: int = 4,
    reduce_dtype_bytes: int = 4,
    reduce_as_all_reduce: bool = False,
    micro_steps: int = 1,
) -> dict[str, float]:
    """FSDP2's step traffic per rank (op -> message bytes S), exactly, for its groups of parameter shapes.

    `groups` are the parameter shapes of each `fully_shard` call in order, the root last.
    Every micro-batch's forward all-gathers every group (S = the padded unsharded bytes);
    its backward all-gathers each non-root group again when `reshard_after_forward`
    (ZeRO-3: FSDP2 keeps the root unsharded until the backward ends). Gradients are
    reduce-scattered once per optimizer step, per group (S = padded gradient bytes; gloo
    runs it as an all_reduce of the whole buffer, which the recorder logs as such).
    Ring wire per rank is then ~3(n-1)/n Psi for ZeRO-3 and ~2(n-1)/n Psi for ZeRO-2, as
    the ZeRO paper's 3 Psi vs DDP's 2 Psi.
    """
    padded = [sum(fsdp_padded_numel(s, n) for s in group) for group in groups]
    gathered = sum(padded) + (sum(padded[:-1]) if reshard_after_forward else 0)
    reduce_op = "all_reduce" if reduce_as_all_reduce else "reduce_scatter"
    return {"all_gather": float(gathered * gather_dtype_bytes * micro_steps), reduce_op: float(sum(padded) * reduce_dtype_bytes)}


def pipeline_ops(
    *, batch: int, seq: int, hidden: int, vocab: int, stages: int, ranks: int, rank: int, dtype_bytes: int = 4
) -> dict[str, float]:
    """What one rank of a pipeline sends, receives and all-reduces per step (op -> message bytes).

    Stage i lives on rank i mod `ranks`. Every boundary (i, i+1) carries the whole batch's
    activations (b x s x h, split into micro-batches) forward and their gradients back, so
    a rank sends and receives one activation's worth per side of each stage it holds. The
    ranks holding the first and the last stage also all-reduce the tied embedding's
    gradient (vocab x h), when they are different ranks.
    """
    act = float(batch * seq * hidden * dtype_bytes)
    held = [i for i in range(stages) if i % ranks == rank]
    sends = sum((i < stages - 1) + (i > 0) for i in held) * act if ranks > 1 else 0.0
    ops = {"send": sends, "recv": sends}
    if ranks > 1 and rank in (0, (stages - 1) % ranks):
        ops["all_reduce"] = float(vocab * hidden * dtype_bytes)
    return {op: b for op, b in ops.items() if b}


def powersgd_elements(shape: tuple[int, int], rank: int, min_compression_rate: float = 2.0) -> tuple[int, bool]:
    """Elements PowerSGD all-reduces for one gradient viewed as n x m.

    With r' = min(n, m, rank): P (n x r') and Q (m x r'), i.e. r'(n + m) elements, but only
    when compression pays, (n + m) r' * min_compression_rate < n m; otherwise the tensor goes
    uncompressed (n m elements). Returns (elements, compressed).
    """
    n, m = shape
    r = min(n, m, rank)
    if (n + m) * r * min_compression_rate < n * m:
        return r * (n + m), True
    return n * m, False


def as_matrix(shape: tuple[int, ...]) -> tuple[int, int]:
    """How PowerSGD views a gradient: `tensor.view(shape[0], -1)` (a 1-D tensor is n x 1)."""
    n = shape[0] if shape else 1
    numel = 1
    for d in shape:
        numel *= d
    return n, numel // n if n else 0


def powersgd_step(shapes: list[tuple[int, ...]], rank: int, min_compression_rate: float = 2.0) -> int:
    """Elements `powerSGD_hook` all-reduces per compressed step, over all buckets.

    Per bucket: one all_reduce of the tensors not worth compressing (1-D ones always),
    then one of every P (n x r') and one of every Q (m x r'). Summed over a step this does
    not depend on the bucketing: the sum of `powersgd_elements` over every gradient.
    """
    return sum(powersgd_elements(as_matrix(s), rank, min_compression_rate)[0] for s in shapes)


def batched_powersgd_step(bucket_numels: list[int], rank: int) -> int:
    """Elements `batched_powerSGD_hook` all-reduces per compressed step.

    Each bucket is zero-padded to a square of side ceil(sqrt(numel)) and compressed as one
    matrix, whatever the compression rate: P and Q of side x rank elements each.
    """
    return sum(2 * math.ceil(math.sqrt(n)) * rank for n in bucket_numels)


def warmup_mix(compressed: float, plain: float, *, start_iter: int, warmup: int, steps: int) -> float:
    """Mean bytes per measured step when a hook sends `plain` before iteration `start_iter`.

    The measured window covers iterations warmup .. warmup+steps-1; PowerSGD all-reduces
    uncompressed until its `start_powerSGD_iter`.
    """
    uncompressed = min(steps, max(0, start_iter - warmup))
    return (uncompressed * plain + (steps - uncompressed) * compressed) / steps


def gathered_payloads(bucket_numels: list[int], payload_bytes: Callable[[int], int], n: int) -> float:
    """all_gather bytes per step (nccl-tests' S: every rank's payload) of a compressing hook.

    Each bucket is one all_gather of the ranks' packed payloads, `payload_bytes(numel)` each.
    """
    return float(sum(payload_bytes(b) for b in bucket_numels) * n)


def tensor_parallel_step(batch: int, seq: int, hidden: int, layers: int, dtype_bytes: int = 4) -> dict[str, float]:
    """Megatron TP: per layer two all_reduces of b*s*h activations forward, two backward."""
    act = batch * seq * hidden * dtype_bytes
    return {"all_reduce": 4 * layers * act, "logical": 4 * layers * act}


def tensor_parallel_ops(
    *, batch: int, seq: int, hidden: int, layers: int, colwise: int, rowwise: int, dtype_bytes: int = 4,
    micro_steps: int = 1, sp: bool = False, loss_parallel: bool = False,
    norm_params: tuple[int, int] = (0, 0), reduce_scatter_as_all_reduce: bool = False,
) -> dict[str, float]:
    """DTensor tensor parallelism as it runs: op -> message bytes per rank per optimizer step.

    Plain: forward all-reduces the b x s x h output of every row-wise linear; backward
    all-reduces the input gradient of every column-wise linear *separately* (DTensor has no
    Megatron `f` operator that sums q, k and v's partial gradients before one all-reduce).
    So a GPT-2 block (fused c_attn, c_fc | c_proj, c_proj) costs Megatron's 4 all-reduces,
    but a Llama block (q, k, v, gate, up | o, down) costs 7, not 4 (`tensor_parallel_step`).

    Sequence parallel (`sp`): per block, attention and the MLP all-gather their input from the
    sequence shards (forward) and reduce-scatter its gradient (backward, once: the column-wise
    linears' partial gradients add up first), and each row-wise linear reduce-scatters its
    output (forward) and all-gathers its gradient (backward): 4 all-gathers and 4
    reduce-scatters of S = b x s x h per block, for Llama too. Around the blocks: the LM head
    gathers the sequence (forward) and the first block's scatter gathers its gradient
    (backward), 2 more all-gathers; each norm's weight gradient, partial over the sequence
    shards, is all-reduced once (`norm_params`: one block's norms, the final norm).

    Loss parallel: the vocab-parallel embedding all-reduces its output (b x s x h, forward),
    the column-wise LM head all-reduces its input gradient (a reduce-scatter under `sp`), and
    the cross-entropy all-reduces three b x s vectors (max, sum of exp, target logit).

    Gloo runs reduce_scatter as an all_reduce of the whole input, logged as one (S unchanged):
    `reduce_scatter_as_all_reduce` files those bytes under all_reduce.
    """
    act = batch * seq * hidden * dtype_bytes
    ops = {"all_gather": 0.0, "reduce_scatter": 0.0, "all_reduce": 0.0}
    if sp:
        ops["all_gather"] += (4 * layers + 2) * act
        ops["reduce_scatter"] += 4 * layers * act
        block_norms, final_norm = norm_params
        ops["all_reduce"] += (layers * block_norms + final_norm) * dtype_bytes
    else:
        ops["all_reduce"] += layers * (colwise + rowwise) * act
    if loss_parallel:
        ops["all_reduce"] += act + 3 * batch * seq * dtype_bytes
        ops["reduce_scatter" if sp else "all_reduce"] += act
    if reduce_scatter_as_all_reduce:
        ops["all_reduce"] += ops.pop("reduce_scatter")
    return {op: float(b * micro_steps) for op, b in ops.items() if b}


def pipeline_step(batch: int, seq: int, hidden: int, stages: int, microbatches: int, dtype_bytes: int = 4) -> dict[str, float]:
    """Pipeline: each stage boundary sends activations forward and their gradients back, per microbatch."""
    act = batch * seq * hidden * dtype_bytes  # whole batch; microbatches split it
    boundaries = stages - 1
    return {"send": 2 * boundaries * act, "logical": 2 * boundaries * act, "microbatches": microbatches}


# --- input transfer: a data rank broadcasts each batch ----------------------------------


@dataclass(frozen=True, slots=True)
class InputLayout:
    """A batch on the wire: `rows x cols` token ids plus `aux` elements (row lengths or cu_seqlens)."""

    rows: int
    cols: int
    aux: int

    @property
    def elements(self) -> int:
        return self.rows * self.cols + self.aux


def padded_shape(lengths: list[int], row_len: int, *, dynamic: bool) -> InputLayout:
    """One document per row: `row_len` columns, or (dynamic) the longest document's, at most `row_len`.

    aux: one length per row (the attention mask, rebuilt by the receiver).
    """
    cols = min(row_len, max(lengths)) if dynamic else row_len
    return InputLayout(rows=len(lengths), cols=cols, aux=len(lengths))


def packed_pieces(lengths: list[int], capacity: int, steps: int) -> list[int]:
    """Document pieces in each of `steps` packed batches of `capacity` slots, documents laid end to end.

    A document that does not fit ends this batch and its remainder starts the next one, so
    every batch is full and the pieces of a batch are the cu_seqlens entries minus one.
    """
    docs, carry, out = iter(lengths), 0, []
    for _ in range(steps):
        filled = pieces = 0
        while filled < capacity:
            n = carry or next(docs)
            take = min(n, capacity - filled)
            carry = n - take
            filled += take
            pieces += 1
        out.append(pieces)
    return out


def input_broadcast_bytes(layout: InputLayout, id_bytes: int, header_bytes: int) -> int:
    """Bytes the data rank broadcasts for one batch: a header (0 for a fixed layout), then ids and aux."""
    return header_bytes + layout.elements * id_bytes


"""`commbench advise`: rank layouts and gradient-compression techniques for a model on a cluster, on paper.

Every number is predicted: compute = 6 Psi x tokens per GPU / achieved FLOP/s (the same work
per GPU under every layout; a pipeline adds its bubble), communication = the alpha-beta time
of the technique's collectives (`collectives.best_seconds`: ring or tree, whichever is faster)
on the inter-node link for everything that spans nodes and on the intra-node link for
tensor parallelism, with no overlap (an upper bound on the exposed time). Model state per GPU
is `memory.model_state_bytes`; a row that does not fit in the device memory is ruled out.
Message sizes come from `bench.comm.cost_model`: DDP all-reduces the fp32 gradients (4 Psi),
fp16 half, PowerSGD its P and Q, top-k and SignSGD all-gather every rank's packed payload.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from bench.comm import cost_model
from bench.predict.collectives import best_seconds
from bench.predict.links import Published
from bench.predict.memory import Layout, model_state_bytes
from bench.predict.shapes import ModelShape, parameter_shapes
from bench.predict.step import Call


@dataclass(frozen=True, slots=True, kw_only=True)
class Cluster:
    """Nodes x GPUs per node, the inter-node link (per GPU), the intra-node link, device memory (B) and speed."""

    nodes: int
    gpus_per_node: int
    link: Published
    intra: Published
    mem_bytes: float
    flops: float = 400e12 * 0.4  # achieved FLOP/s per GPU: H100 bf16 dense (~990 TFLOP/s) is far above; 160 T is a typical MFU
    tokens_per_gpu: int = 4096
    seq_len: int = 4096
    microbatches: int = 8

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.gpus_per_node < 1 or self.mem_bytes <= 0 or self.flops <= 0 or self.tokens_per_gpu < 1:
            raise ValueError("nodes, gpus per node, memory, flops and tokens must be positive")

    @property
    def world(self) -> int:
        return self.nodes * self.gpus_per_node


@dataclass(frozen=True, slots=True)
class Technique:
    """A registered strategy name, its layout, and its collectives per step: (calls across nodes, calls inside a node)."""

    name: str
    layout: Layout
    calls: Callable[[ModelShape, Cluster], tuple[list[Call], list[Call]]]


@dataclass(frozen=True, slots=True)
class Advice:
    technique: Technique
    state_bytes: int
    fits: bool
    compute_s: float
    comm_s: float

    @property
    def step_s(self) -> float:
        return self.compute_s + self.comm_s


def _psi(m: ModelShape) -> int:
    return m.params


def _ddp(wire_bytes_per_elt: float) -> Callable[[ModelShape, Cluster], tuple[list[Call], list[Call]]]:
    return lambda m, c: ([Call("all_reduce", wire_bytes_per_elt * _psi(m))], [])


def _powersgd(m: ModelShape, c: Cluster) -> tuple[list[Call], list[Call]]:
    return [Call("all_reduce", 4.0 * cost_model.powersgd_step(parameter_shapes(m), 4))], []


def _gathered(payload: Callable[[int], int]) -> Callable[[ModelShape, Cluster], tuple[list[Call], list[Call]]]:
    return lambda m, c: ([Call("all_gather", cost_model.gathered_payloads([_psi(m)], payload, c.world))], [])


def _fsdp(reshard: bool) -> Callable[[ModelShape, Cluster], tuple[list[Call], list[Call]]]:
    def calls(m: ModelShape, c: Cluster) -> tuple[list[Call], list[Call]]:
        ops = cost_model.fsdp_step(4 * _psi(m), c.world)
        gathered = ops["all_gather"] if reshard else ops["all_gather"] / 2
        return [Call("all_gather", gathered), Call("reduce_scatter", ops["reduce_scatter"])], []

    return calls


def _tp_fsdp(m: ModelShape, c: Cluster) -> tuple[list[Call], list[Call]]:
    tp = c.gpus_per_node
    batch = max(1, c.tokens_per_gpu * tp // c.seq_len)  # a tp group works on tp GPUs' worth of tokens
    act = cost_model.tensor_parallel_step(batch, c.seq_len, m.hidden, m.layers, dtype_bytes=2)["all_reduce"]
    shard = 4 * _psi(m) / tp
    ops = cost_model.fsdp_step(int(shard), c.nodes)
    return [Call("all_gather", ops["all_gather"]), Call("reduce_scatter", ops["reduce_scatter"])], [Call("all_reduce", act)]


def _pp_ddp(m: ModelShape, c: Cluster) -> tuple[list[Call], list[Call]]:
    batch = max(1, c.tokens_per_gpu * c.nodes // c.seq_len)
    act = batch * c.seq_len * m.hidden * 2  # bf16 activations, the whole batch per boundary and direction
    return [Call("send", 2.0 * act)], [Call("all_reduce", 4.0 * _psi(m) / c.nodes)]


TECHNIQUES: tuple[Technique, ...] = (
    Technique("baseline", Layout(name="DDP"), _ddp(4)),
    Technique("fp16_compress", Layout(name="DDP"), _ddp(2)),
    Technique("powersgd(rank=4)", Layout(name="DDP"), _powersgd),
    Technique("topk(ratio=0.01)", Layout(name="DDP"), _gathered(lambda n: 8 * math.ceil(0.01 * n))),
    Technique("signsgd", Layout(name="DDP"), _gathered(lambda n: math.ceil(2 * n / 8) + 4)),
    Technique("fsdp", Layout(name="FSDP (ZeRO-3)", zero=3), _fsdp(True)),
    Technique("fsdp(reshard_after_forward=false)", Layout(name="FSDP (ZeRO-2 traffic)", zero=3), _fsdp(False)),
    Technique("tensor_parallel+fsdp", Layout(name="TP in node x FSDP across", zero=3, tp=0), _tp_fsdp),
    Technique("pipeline", Layout(name="PP across nodes x DDP in node", pp=0), _pp_ddp),
)


def _layout(t: Technique, c: Cluster) -> Layout:
    """Degrees of 0 mean 'as wide as the cluster allows': tp = GPUs per node, pp = nodes."""
    return Layout(name=t.layout.name, zero=t.layout.zero, tp=t.layout.tp or c.gpus_per_node, pp=t.layout.pp or c.nodes)


def _comm(calls: list[Call], n: int, link: Published) -> float:
    beta = link.rate_bps / 8
    return sum(c.per_step * best_seconds(c.op, c.msg_bytes, n, link.latency_s, beta)[0] for c in calls)


def advise(m: ModelShape, c: Cluster, techniques: tuple[Technique, ...] = TECHNIQUES) -> list[Advice]:
    """Every technique on `c`, fitting ones first, fastest predicted step first."""
    out = []
    for t in techniques:
        layout = _layout(t, c)
        across, inside = t.calls(m, c)
        n_across = c.nodes if layout.tp > 1 or layout.pp > 1 else c.world
        comm = _comm(across, n_across, c.link) + _comm(inside, c.gpus_per_node, c.intra)
        compute = 6 * m.params * c.tokens_per_gpu / c.flops
        if layout.pp > 1:
            compute *= 1 + (layout.pp - 1) / c.microbatches  # the 1F1B bubble
        state = model_state_bytes(m, layout, c.world)
        out.append(Advice(t, state, state <= c.mem_bytes, compute, comm))
    return sorted(out, key=lambda a: (not a.fits, a.step_s))

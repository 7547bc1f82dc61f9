"""`collectives`: one collective per step at a fixed message size, like nccl-tests on any backend.

Settings: `options.op` (all_reduce, all_gather, reduce_scatter, broadcast, all_to_all,
send_recv), `options.size_bytes`, the message size S in nccl-tests' convention (the
total array for all_gather/reduce_scatter, so each rank contributes S/n), and
`options.dtype` (float32; float16 or bfloat16 as a compressing hook sends them: a reduction
sums in that type, which gloo does at its own speed). `send_recv` is a
ring shift: every rank sends S to rank+1 and receives S from rank-1 in one
`batch_isend_irecv`. Each step issues the call and waits for it, so its latency is the
collective's time, and algbw = S / t, busbw = algbw x the op's bus factor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.distributed as dist

from bench.contracts import Accuracy, Parallel, RankResult, TrialConfig
from bench.distributed.env import RankEnv
from bench.errors import SkipTrial
from bench.meters.window import Window
from bench.strategies import Composition
from bench.strategies.metrics import Metric
from bench.workloads import Workload, register

Op = Literal["all_reduce", "all_gather", "reduce_scatter", "broadcast", "all_to_all", "send_recv"]
OPS: tuple[str, ...] = get_args(Op)
ELEMENT = torch.float32
DType = Literal["float32", "float16", "bfloat16"]


@dataclass(kw_only=True, slots=True, frozen=True)
class CollectivesOptions:
    """`options.*` of the collectives workload: which collective, and its message size S."""

    op: Op = "all_reduce"
    size_bytes: int = 1 << 20  # nccl-tests' S: the whole array for all_gather/reduce_scatter
    dtype: DType = "float32"

    @property
    def element(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def __post_init__(self) -> None:
        if self.size_bytes <= 0:
            raise ValueError(f"size_bytes must be a positive integer, got {self.size_bytes}")


def elements(op: str, size_bytes: int, n: int, element: torch.dtype = ELEMENT) -> int:
    """Elements of the full message S, rounded down so every rank's shard is whole."""
    unit = element.itemsize * (n if op in ("all_gather", "reduce_scatter", "all_to_all") else 1)
    return max(1, size_bytes // unit) * (unit // element.itemsize)


def make_call(op: str, numel: int, env: RankEnv, element: torch.dtype = ELEMENT) -> Callable[[], None]:
    """A closure issuing one blocking collective on preallocated buffers."""
    n, r, dev = env.world_size, env.rank, env.device
    full = torch.ones(numel, dtype=element, device=dev)
    shard = torch.ones(numel // n, dtype=element, device=dev)
    if op == "all_reduce":
        return lambda: dist.all_reduce(full)
    if op == "broadcast":
        return lambda: dist.broadcast(full, src=0)
    if op == "all_gather":
        return lambda: dist.all_gather_into_tensor(full, shard)
    if op == "reduce_scatter":
        return lambda: dist.reduce_scatter_tensor(shard, full)
    if op == "all_to_all":
        out = torch.empty_like(full)
        return lambda: dist.all_to_all_single(out, full)
    recv = torch.empty_like(full)

    def ring_shift() -> None:
        ops = [dist.P2POp(dist.isend, full, (r + 1) % n), dist.P2POp(dist.irecv, recv, (r - 1) % n)]
        for work in dist.batch_isend_irecv(ops):
            work.wait()

    return ring_shift


def analytic_ops(op: str, size_bytes: int) -> dict[str, float]:
    """What each rank should log per step. Gloo runs reduce_scatter as all_reduce, but the model
    states the op that was *asked for*; the report flags the difference."""
    if op == "send_recv":
        return {"send": float(size_bytes), "recv": float(size_bytes)}
    return {op: float(size_bytes)}


def run(cfg: TrialConfig, comp: Composition, env: RankEnv) -> RankResult:
    opts: CollectivesOptions = WORKLOAD.options(cfg)
    if opts.op == "send_recv" and env.world_size < 2:
        raise SkipTrial("send_recv needs at least 2 ranks")
    numel = elements(opts.op, opts.size_bytes, env.world_size, opts.element)
    call = make_call(opts.op, numel, env, opts.element)
    window = Window(env.device, env.backend, track_comm=cfg.track_comm).measure(call, warmup=cfg.warmup_steps, steps=cfg.steps)
    return RankResult(
        rank=env.rank,
        window=window,
        tokens_per_step=None,
        accuracy=Accuracy(),
        metrics={"op": opts.op, "size_bytes": numel * opts.element.itemsize, "elements": numel, "dtype": opts.dtype},
        analytic_ops=analytic_ops(opts.op, numel * opts.element.itemsize),
        parallel=Parallel(dp=env.world_size),
    )


WORKLOAD = register(
    Workload(
        name="collectives",
        summary="one collective per step (options.op, options.size_bytes): logical/wire bytes, algbw, busbw",
        run=run,
        options_type=CollectivesOptions,
        needs_model=False,
        metrics=(
            Metric("op", str, doc="the collective run each step"),
            Metric("size_bytes", int, "B", doc="its message size S (sets algbw and busbw)"),
            Metric("elements", int, "count", doc="its elements"),
            Metric("dtype", str, doc="their type"),
        ),
    )
)

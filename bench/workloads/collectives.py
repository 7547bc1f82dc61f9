"""`collectives`: one collective per step at a fixed message size, like nccl-tests on any backend.

Settings: `options.op` (all_reduce, all_gather, reduce_scatter, broadcast, all_to_all,
send_recv) and `options.size_bytes`, the message size S in nccl-tests' convention (the
total array for all_gather/reduce_scatter, so each rank contributes S/n). `send_recv` is a
ring shift: every rank sends S to rank+1 and receives S from rank-1 in one
`batch_isend_irecv`. Each step issues the call and waits for it, so its latency is the
collective's time, and algbw = S / t, busbw = algbw x the op's bus factor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from bench.distributed.env import RankEnv
from bench.errors import BenchError
from bench.runner.config import TrialConfig
from bench.strategies import Composition
from bench.trackers.window import Window

OPS = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "all_to_all", "send_recv")
ELEMENT = torch.float32


def options(cfg: TrialConfig) -> tuple[str, int]:
    """Validated (op, size_bytes) from the trial's options."""
    op = cfg.options.get("op", "all_reduce")
    if op not in OPS:
        raise BenchError(f"options.op {op!r} is not one of {', '.join(OPS)}")
    size = cfg.options.get("size_bytes", 1 << 20)
    if not isinstance(size, int) or size <= 0:
        raise BenchError(f"options.size_bytes must be a positive integer, got {size!r}")
    return op, size


def elements(op: str, size_bytes: int, n: int) -> int:
    """Elements of the full message S, rounded down so every rank's shard is whole."""
    unit = ELEMENT.itemsize * (n if op in ("all_gather", "reduce_scatter", "all_to_all") else 1)
    return max(1, size_bytes // unit) * (unit // ELEMENT.itemsize)


def make_call(op: str, numel: int, env: RankEnv) -> Callable[[], None]:
    """A closure issuing one blocking collective on preallocated buffers."""
    n, r, dev = env.world_size, env.rank, env.device
    full = torch.ones(numel, dtype=ELEMENT, device=dev)
    shard = torch.ones(numel // n, dtype=ELEMENT, device=dev)
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


def run(cfg: TrialConfig, comp: Composition, env: RankEnv) -> dict[str, Any]:
    op, size = options(cfg)
    if op == "send_recv" and env.world_size < 2:
        from bench.errors import SkipTrial

        raise SkipTrial("send_recv needs at least 2 ranks")
    numel = elements(op, size, env.world_size)
    call = make_call(op, numel, env)
    window = Window(env.device, env.backend, track_comm=cfg.track_comm)
    out = window.measure(call, warmup=cfg.warmup_steps, steps=cfg.steps)
    out.update(
        profile=None,
        tokens_per_step=0,
        accuracy={},
        metrics={"op": op, "size_bytes": numel * ELEMENT.itemsize, "elements": numel},
        parallel={"dp": env.world_size, "tp": 1, "pp": 1},
        wrapper=None,
        analytic_ops=analytic_ops(op, numel * ELEMENT.itemsize),
    )
    return out

"""A compressing DDP hook's own work per step, timed apart from the link: its last step's buckets replayed.

On a link, a hook's encode and decode run interleaved with its collectives, and torch's hooks
(fp16, PowerSGD) run part of their work in `Future.then` callbacks on gloo's threads, so the
codec cannot be timed inside the step. Each rank instead keeps the `GradBucket`s its hook saw
in the last step (`Recording` wraps the registered hook: one dict store per bucket call) and,
after the run, replays them on a gloo group of that rank alone, where a collective moves no
byte over the link and its future completes at once:

- through the strategy's hook, on a state pointed at that group (`CommHookStrategy.replay_hook`);
- through DDP's default, a plain all_reduce of the bucket on the same group (the reference).

`codec = hook - plain`, the median over `ROUNDS` interleaved rounds: the encode, decode and
bookkeeping the hook adds to DDP's own path, per step. What a one-rank replay does not show:
a decoder that decodes every rank's payload (top-k, sign, QSGD all-gather) decodes one here,
not n; and the reduction inside a collective (gloo sums an fp16 buffer on the CPU) belongs to
the collective, which the alpha-beta calibration prices in fp32.
The replay writes into the buckets' buffers (DDP's gradient storage): it runs after the last
optimizer step.
"""

# No `from __future__ import annotations`: DDP.register_comm_hook compares the hook's
# annotations with the real `dist.GradBucket` / `Future[Tensor]` objects, not strings.
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

Hook = Callable[[Any, dist.GradBucket], torch.futures.Future[torch.Tensor]]
ROUNDS = 5
_GROUPS: list[dist.ProcessGroup] = []  # kept to interpreter exit: torch's callbacks may hold the last reference (powersgd.py)


@dataclass(slots=True)
class Recording:
    """A registered hook's state, its hook and the buckets of the step it saw last (index -> bucket)."""

    state: Any
    hook: Hook
    buckets: dict[int, dist.GradBucket] = field(default_factory=dict)


def recorded_hook(rec: Recording, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP comm hook: keep `bucket` (a new step starts at index 0), then run the wrapped hook."""
    if bucket.index() == 0:
        rec.buckets.clear()
    rec.buckets[bucket.index()] = bucket
    return rec.hook(rec.state, bucket)


def own_group() -> dist.ProcessGroup:
    """A gloo group of this rank alone (only this rank takes part in creating it)."""
    group = dist.new_group([dist.get_rank()], backend="gloo", use_local_synchronization=True, group_desc="codec_replay")
    _GROUPS.append(group)
    return group


def plain_all_reduce(group: dist.ProcessGroup, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP's default hook on `group`: all_reduce the bucket, divide by the group size."""
    buffer = bucket.buffer()
    fut = dist.all_reduce(buffer, group=group, async_op=True).get_future()
    return fut.then(lambda f: f.value()[0].div_(group.size()))


def _time_step(state: Any, hook: Hook, buckets: list[dist.GradBucket]) -> float:
    """Seconds to run `hook` over `buckets` in order, each to completion (CPU tensors: no device sync)."""
    t0 = time.perf_counter()
    for b in buckets:
        hook(state, b).wait()
    return time.perf_counter() - t0


@dataclass(frozen=True, slots=True)
class Replay:
    """One rank's replay: the hook's and the plain all_reduce's step (median s), their difference, the elements."""

    hook_s: float
    plain_s: float
    codec_s: float
    elements: int


def replay(rec: Recording, make: Callable[[dist.ProcessGroup], tuple[Any, Hook]], rounds: int = ROUNDS) -> Replay | None:
    """Time `make(group)`'s hook against a plain all_reduce over `rec`'s last buckets, on this rank's own group.

    None where the hook saw no bucket. `make` returns (state, hook) that run the strategy's
    hook on `group`, without touching the state the run reported from.
    """
    buckets = [rec.buckets[i] for i in sorted(rec.buckets)]
    if not buckets:
        return None
    group = own_group()
    state, hook = make(group)
    hooked, plain = [], []
    _time_step(state, hook, buckets)  # one untimed pass: allocations, PowerSGD's first P and Q of this state
    for _ in range(rounds):
        hooked.append(_time_step(state, hook, buckets))
        plain.append(_time_step(group, plain_all_reduce, buckets))
    return Replay(
        hook_s=statistics.median(hooked),
        plain_s=statistics.median(plain),
        codec_s=statistics.median(h - p for h, p in zip(hooked, plain)),
        elements=sum(b.buffer().numel() for b in buckets),
    )

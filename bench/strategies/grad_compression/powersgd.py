"""torch's PowerSGD DDP hooks made safe on gloo: one process group per bucket, and a 2-D shim for the batched hook.

Root cause of the gloo "hang" (torch 2.13 CPU, tiny GPT-2, 2-4 ranks)
-----------------------------------------------------------------------
`powerSGD_hook` issues three all_reduces per bucket: the uncompressed (1-D) tensors from
the hook itself, then P and Q from inside `Future.then` callbacks, each followed by a
blocking `.wait()` in that callback. A `then` callback runs on whichever thread completes
the previous future: inline on the autograd thread when the all_reduce had already
finished by the time `.then` was attached, otherwise on one of ProcessGroupGloo's worker
threads (2 per process group). With two or more buckets in flight on one process group
this breaks in two ways:

1. Issue order differs across ranks. gloo matches collectives by a per-process-group
   sequence number taken when a collective is *issued*. Bucket 0's P all_reduce (issued
   from a callback) races with bucket 1's uncompressed all_reduce (issued by DDP's next
   hook call on the autograd thread), and each rank's timing picks a different winner.
   Logged on 2 ranks (elements): rank 0 issued [b0 uncompressed 2048, b0 P 5632,
   b1 uncompressed 1536], rank 1 [2048, 1536, 5632]. gloo then pairs different tensors:
   `op.preamble.length <= op.nbytes ... Received data size doesn't match expected size`
   (SIGABRT) when the peer's message is larger; when it is smaller gloo accepts it and the
   ranks' all_reduce schedules diverge, i.e. corrupt data or a hang.
2. Worker starvation. When both gloo worker threads run callbacks of different buckets,
   both block in `.wait()` on P all_reduces that only those same threads could execute.
   faulthandler dump of a hung rank (bucket_cap_mb=0.25): both worker threads at
   powerSGD_hook.py:589 (`.wait()` in `unpack_uncompressed_tensors_and_allreduce_ps`), the
   main thread in `backward` waiting for DDP's bucket futures. This is the silent hang.

Why the MLP worked and GPT-2 did not: bucket count. The MLP fits one bucket. tiny GPT-2
(1,478,144 parameters) is one bucket at iteration 0, but DDP rebuilds its buckets after
the first iteration and, when `bucket_cap_mb` is left at its default, caps the *first*
rebuilt bucket at 1 MiB (`dist._DEFAULT_FIRST_BUCKET_BYTES`): two buckets (264,192 and
1,213,952 elements) from iteration 1 on. Iterations before `start_powerSGD_iter` use a
plain all_reduce (no collective in a callback), so the first compressed step is the first
that fails. Checked and ruled out as causes (the unwrapped hook still aborts or hangs, the
wrapped one passes): QR (rank 4) and Gram-Schmidt (rank 2) orthogonalization, warm start
and error feedback on or off, one intra-op thread per rank (commbench's default on 2
cores). None of them changes where the collectives are issued (the first report saw the
hang with and without torch.profiler, which does not either).
Tensor order, GPT-2's tied embedding and Conv1D layout are identical on every rank, so
every rank does pick the same tensors to compress. More gloo threads cannot be asked for
(`new_group` ignores gloo options) and would not fix the ordering race anyway.
Passing any explicit `bucket_cap_mb` >= the model size also "fixes" it (one bucket), at
the cost of all compute/communication overlap. NCCL is unaffected: per torch's
`Work.get_future` docs, a GPU work's future is done once the kernel is enqueued and
callbacks run inline, so they all run on the autograd thread in bucket order.

The fix here: give every bucket its own gloo process group. Within one group the three
all_reduces are causally chained (uncompressed -> P -> Q), so every rank issues them in the
same order, and a group's two worker threads always leave one free for the all_reduce its
blocked callback waits on. torch's hook runs unchanged; the wrapper only points
`state.process_group` at the bucket's group before each call (the hook captures it
synchronously). Groups are created on a bucket index's first hook call, which DDP makes in
ascending bucket order on every rank (so `new_group` calls line up); they cost one set of
TCP pairs and two threads each.

A third race of the same kind, found while checking `warm_start=False`: the last callback
of each bucket then runs `state.p_memory_dict.clear()` (and q), emptying the dicts every
bucket shares, sometimes between the next bucket's hook storing its P buffer and reading it
back (`KeyError: 1` at powerSGD_hook.py:528). With warm start off the hook re-allocates and
re-randomizes P and Q at every call whatever the dicts hold, so `clear()` only frees memory:
`register_powersgd` gives such a state dicts whose `clear()` keeps their entries, at the
cost of keeping the last P and Q of each bucket alive, as warm start does.

Teardown has a race of the same origin (callbacks released on worker threads after the
main thread moved on): see `_ALIVE` below for the two exit-time aborts and their guard.

`batched_powerSGD_hook` raised AssertionError on gloo - and would on any backend (the
assert is in plain tensor code, at the first compressed step): since `powerSGD_hook` was
batched (pytorch #74907 / PR #75157), `_orthogonalize` asserts a 3-D batch of matrices,
but `batched_powerSGD_hook` still passes its 2-D P and Q (powerSGD_hook.py:808). `_allow_2d_orthogonalize`
wraps that private helper once, viewing a 2-D matrix as a batch of one (a view, so the
in-place orthogonalization still lands in P or Q); 3-D calls are passed through untouched,
and nothing is patched if torch accepts 2-D again.
"""

# No `from __future__ import annotations`: DDP.register_comm_hook compares the hook's
# annotations with the real `dist.GradBucket` / `Future[Tensor]` objects, not strings.
import atexit
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd
from torch.nn.parallel import DistributedDataParallel

PowerSGDHook = Callable[[psgd.PowerSGDState, dist.GradBucket], torch.futures.Future[torch.Tensor]]

# Teardown. torch's hook callbacks run on gloo worker threads, and each worker releases the
# callback's Python closure (which holds the bucket's group and tensors) a moment *after*
# the bucket's future has woken the main thread; the release needs the GIL. A process that
# exits right after its last backward then aborts in one of two ways (gdb on the cores; 9 of
# 10 quick-exit runs with per-bucket groups, 3 of 17 with torch's hook on the default group):
# - the closure held the group's last reference, so ~ProcessGroupGloo runs on its own
#   worker thread and joins itself ("std::system_error: Resource deadlock avoided");
# - the worker asks for the GIL after interpreter finalization began, and CPython ends the
#   thread with pthread_exit through C++ frames ("terminate called without an active
#   exception").
# So every bucket group stays referenced here until interpreter exit (the last reference
# then goes on the main thread, with idle workers), and an atexit hook, which runs before
# finalization, releases the GIL briefly so that pending closure releases finish.
# `destroy_process_group` still shuts the groups down as usual.
_ALIVE: list[dist.ProcessGroup] = []
_DRAIN_S = 0.05  # a pending release needs microseconds once it holds the GIL


def _let_workers_release_callbacks() -> None:
    time.sleep(_DRAIN_S)  # sleeping releases the GIL to the waiting worker threads


@dataclass(slots=True)
class BucketGroups:
    """One process group per DDP bucket index, created on that index's first hook call."""

    backend: str
    groups: dict[int, dist.ProcessGroup] = field(default_factory=dict)

    def get(self, index: int) -> dist.ProcessGroup:
        if index not in self.groups:
            # Every rank reaches this in the same order (DDP calls hooks in ascending bucket
            # index), which `new_group` requires of all ranks of the default group.
            if not _ALIVE:
                atexit.register(_let_workers_release_callbacks)
            self.groups[index] = dist.new_group(backend=self.backend, group_desc=f"powersgd_bucket{index}")
            _ALIVE.append(self.groups[index])
        return self.groups[index]


@dataclass(slots=True)
class PowerSGDHookState:
    """What `bucket_group_hook` gets: torch's PowerSGD state, the hook, and the bucket groups."""

    powersgd: psgd.PowerSGDState
    hook: PowerSGDHook
    groups: BucketGroups | None  # None: the hook's own group is safe (NCCL)

    def compression_stats(self) -> tuple[float, int, int]:
        """torch's (rate, elements before, elements after) over all compressed steps so far."""
        return self.powersgd.compression_stats()


def bucket_group_hook(state: PowerSGDHookState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Run torch's PowerSGD hook for `bucket` on that bucket's own process group."""
    if state.groups is not None:
        # Read synchronously by the hook (captured as `group_to_use`), so resetting it on the
        # next bucket's call does not affect this bucket's callbacks.
        state.powersgd.process_group = state.groups.get(bucket.index())
    return state.hook(state.powersgd, bucket)


class _KeepOnClear(dict):
    """A dict whose `clear()` keeps its entries: see the warm-start race in the module docstring."""

    def clear(self) -> None:
        pass


def needs_bucket_groups(group: dist.ProcessGroup | None) -> bool:
    """Whether work futures of `group` complete on backend threads (gloo) rather than at enqueue (NCCL)."""
    return dist.get_backend(group) != dist.Backend.NCCL


def _allow_2d_orthogonalize() -> None:
    """Let torch's `_orthogonalize` accept the 2-D matrices `batched_powerSGD_hook` passes (idempotent)."""
    original = psgd._orthogonalize
    if getattr(original, "_accepts_2d", False):
        return
    try:
        original(torch.ones(2, 1))
        return  # this torch already accepts 2-D: nothing to fix
    except AssertionError:
        pass

    @functools.wraps(original)
    def orthogonalize(matrices: torch.Tensor, epsilon: float = 0) -> None:
        original(matrices.unsqueeze(0) if matrices.dim() == 2 else matrices, epsilon)

    orthogonalize._accepts_2d = True  # type: ignore[attr-defined]
    psgd._orthogonalize = orthogonalize


def powersgd_state(
    *,
    matrix_approximation_rank: int = 1,
    start_powerSGD_iter: int = 2,
    batched: bool = False,
    process_group: dist.ProcessGroup | None = None,
    **options: Any,
) -> PowerSGDHookState:
    """The state `bucket_group_hook` needs to run torch's `powerSGD_hook` (or `batched_powerSGD_hook`) on `ddp`'s gloo.

    `options` go to `PowerSGDState` (e.g. `warm_start`, `use_error_feedback`,
    `min_compression_rate`). On a non-NCCL backend each bucket runs on its own process
    group (see the module docstring); those groups span all ranks, so `process_group` must
    then be the default group.
    """
    state = psgd.PowerSGDState(
        process_group=process_group,
        matrix_approximation_rank=matrix_approximation_rank,
        start_powerSGD_iter=start_powerSGD_iter,
        **options,
    )
    groups = None
    if needs_bucket_groups(process_group):
        if process_group is not None and process_group != dist.group.WORLD:
            raise ValueError("per-bucket groups span all ranks: on gloo, run PowerSGD over the default group")
        groups = BucketGroups(backend=dist.get_backend(process_group))
        if not state.warm_start:
            state.p_memory_dict, state.q_memory_dict = _KeepOnClear(), _KeepOnClear()
    if batched:
        _allow_2d_orthogonalize()
    hook = psgd.batched_powerSGD_hook if batched else psgd.powerSGD_hook
    return PowerSGDHookState(powersgd=state, hook=hook, groups=groups)


def register_powersgd(ddp: DistributedDataParallel, **options: Any) -> PowerSGDHookState:
    """Register torch's PowerSGD hook on `ddp` so it works on gloo (`powersgd_state`'s options)."""
    hook_state = powersgd_state(**options)
    ddp.register_comm_hook(hook_state, bucket_group_hook)
    return hook_state


def on_group(hook_state: PowerSGDHookState, group: dist.ProcessGroup) -> psgd.PowerSGDState:
    """A copy of torch's state that runs on `group`: its own counters and stats, the same P, Q and error memories."""
    old = hook_state.powersgd
    state = object.__new__(type(old))  # not copy.copy: PowerSGDState's __getstate__ drops the group, with a warning
    for name in type(old).__slots__:
        setattr(state, name, getattr(old, name))
    state.process_group = group
    return state

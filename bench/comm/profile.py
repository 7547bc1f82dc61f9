"""Opt-in profiler pass: how long each collective took, and how much of it compute hid.

Runs a few extra steps *after* the measured window under torch.profiler (CPU activity).
The profiler records every op, which costs time per op, so it never runs during the steps
whose latency is reported. What it adds:

- per collective op: calls and total time of the backend's own events (`gloo:all_reduce`
  on gloo's worker threads, `nccl:*` on NCCL), from which algbw/busbw follow;
- the overlap fraction: of the time collectives were in flight, the share during which the
  step's main thread was computing (forward/backward/optimizer ops). 1.0 means fully hidden
  communication, 0.0 fully exposed;
- the hidden time: that intersection itself, per step (s): what the predictor subtracts as
  overlap (bench/predict/step.py). On gloo a collective is in flight from its enqueue, so the
  time it waits for the slower rank counts as in flight too.

On CUDA the NCCL kernels run on their own streams; the CPU-side events then time the
enqueue, not the transfer, so durations are only reported for CPU backends (gloo).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from bench.comm.accounting import normalise_op
from bench.contracts import Profile

_COMM_PREFIXES = ("gloo:", "nccl:")
# Main-thread events that are waiting or enqueueing, not computing.
_NOT_COMPUTE = ("c10d::", "gloo:", "nccl:", "aten::wait", "wait_tensor", "Work.wait")

Interval = tuple[float, float]


def _union(intervals: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _length(intervals: list[Interval]) -> float:
    return sum(e - s for s, e in intervals)


def _intersection(a: list[Interval], b: list[Interval]) -> float:
    total, i, j = 0.0, 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        total += max(0.0, hi - lo)
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def overlap_fraction(comm: list[Interval], compute: list[Interval]) -> float | None:
    """Share of the union of `comm` intervals that lies inside the union of `compute`."""
    busy = _length(_union(comm))
    return None if busy == 0 else hidden_time(comm, compute) / busy


def hidden_time(comm: list[Interval], compute: list[Interval]) -> float:
    """Length of the union of `comm` that lies inside the union of `compute`."""
    return _intersection(_union(comm), _union(compute))


def analyse(events: list[Any], main_thread: int, steps: int) -> Profile:
    """Turn profiler events into per-op collective timings and the overlap fraction."""
    per_op: dict[str, dict[str, float]] = defaultdict(lambda: {"calls": 0, "time_s": 0.0})
    comm: list[Interval] = []
    compute: list[Interval] = []
    for e in events:
        start, end = e.time_range.start / 1e6, e.time_range.end / 1e6  # us -> s
        if e.name.startswith(_COMM_PREFIXES):
            agg = per_op[normalise_op(e.name)]
            agg["calls"] += 1
            agg["time_s"] += end - start
            comm.append((start, end))
        elif e.thread == main_thread and e.cpu_parent is None and not e.name.startswith(_NOT_COMPUTE):
            compute.append((start, end))
    return Profile(
        steps=steps,
        per_op={op: {**v, "time_s_per_call": v["time_s"] / v["calls"]} for op, v in per_op.items()},
        comm_time_s_per_step=_length(_union(comm)) / steps if steps else None,
        overlap_fraction=overlap_fraction(comm, compute),
        hidden_s_per_step=hidden_time(comm, compute) / steps if steps and comm else None,
    )


def profile_steps(step: Callable[[], object], steps: int, device: torch.device) -> Profile | None:
    """Run `step` `steps` times under the profiler and analyse the collectives it issued."""
    if steps <= 0:
        return None
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    main = _main_thread_id(prof.events())
    result = analyse(list(prof.events()), main, steps)
    if device.type == "cuda":
        result.per_op = {op: {"calls": v["calls"]} for op, v in result.per_op.items()}
        result.comm_time_s_per_step = None
        result.overlap_fraction = None
        result.hidden_s_per_step = None
        result.reason = "NCCL runs on CUDA streams: CPU-side events time the enqueue, not the transfer"
    return result


def _main_thread_id(events: Any) -> int:
    """The profiler's id for this thread: the one that recorded the most top-level events."""
    counts: dict[int, int] = defaultdict(int)
    for e in events:
        if e.cpu_parent is None and not e.name.startswith(_COMM_PREFIXES):
            counts[e.thread] += 1
    return max(counts, key=counts.__getitem__) if counts else threading.get_ident()

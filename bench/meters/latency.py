"""Step timing: synchronise the device, time each step, keep every raw sample."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


class StepTimer:
    """Times steps on one rank.

    On CPU a step is bracketed by `perf_counter`; on CUDA by CUDA events, read after one
    synchronize at the end so timing never adds a sync inside the measured loop. The
    device is synchronized before the first step so queued work is not billed to it.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._cpu: list[float] = []
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    @contextmanager
    def step(self) -> Iterator[None]:
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._events.append((start, end))
        else:
            t0 = time.perf_counter()
            yield
            self._cpu.append(time.perf_counter() - t0)

    def samples_s(self) -> list[float]:
        """All step durations in seconds, in order."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return [s.elapsed_time(e) / 1e3 for s, e in self._events]
        return list(self._cpu)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def percentiles(samples: list[float]) -> dict[str, float | None]:
    """p50/p90/p99, mean and std of `samples` (None for an empty list)."""
    if not samples:
        return {"p50": None, "p90": None, "p99": None, "mean": None, "std": None}
    arr = np.asarray(samples, dtype=np.float64)
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(arr.mean()), "std": float(arr.std())}

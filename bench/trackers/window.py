"""One measured window on one rank: step timer, memory peaks, collectives and wire bytes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from bench.comm.accounting import CommAccountant, records_to_dicts, summarise
from bench.comm.wire import WireCounter
from bench.trackers.latency import StepTimer, sync
from bench.trackers.memory import MemoryTracker

NCCL_WIRE_REASON = "NCCL moves bytes over NVLink/PCIe/IB, invisible to TCP socket counters"


class Window:
    """Start after warmup, time each measured step with `timer.step()`, stop at the end.

    Everything here is read outside the timed steps: starting and stopping dump the
    flight recorder and read socket counters, neither of which touches the steps.
    """

    def __init__(self, device: torch.device, backend: str, *, track_comm: bool = True) -> None:
        self.device = device
        self.backend = backend
        self.track_comm = track_comm
        self.timer = StepTimer(device)
        self.memory = MemoryTracker(device)
        self.comm = CommAccountant() if track_comm else None
        self.wire = WireCounter() if track_comm and backend == "gloo" else None

    def measure(self, step: Callable[[], object], *, warmup: int, steps: int,
                before: Callable[[], object] | None = None) -> dict[str, Any]:
        """Run `warmup` untimed steps, then `before()` (e.g. a barrier), then `steps` timed ones."""
        for _ in range(warmup):
            step()
        if before is not None:
            before()
        self.start()
        for _ in range(steps):
            with self.timer.step():
                step()
        return self.stop(steps)

    def start(self) -> None:
        sync(self.device)
        self.memory.start()
        if self.comm:
            self.comm.start()
        if self.wire:
            self.wire.start()

    def stop(self, steps: int) -> dict[str, Any]:
        sync(self.device)
        out: dict[str, Any] = {"step_times_s": self.timer.samples_s()}
        wire = self.wire.stop() if self.wire else None
        records = self.comm.stop() if self.comm else []
        out["memory"] = self.memory.stop()
        out["comm_records"] = records_to_dicts(records)
        out["comm_summary"] = summarise(records, steps) if self.comm else None
        out["wire"] = wire
        if not self.track_comm:
            out["wire_reason"] = out["comm_reason"] = "byte accounting disabled (track_comm=false)"
        elif wire is None:
            out["wire_reason"] = NCCL_WIRE_REASON
        return out

"""One measured window on one rank: step timer, memory peaks, GPU utilisation, collectives and wire bytes."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist

from bench.comm.accounting import CommAccountant, records_to_dicts, summarise
from bench.comm.link import LinkCounter
from bench.comm.wire import WireCounter, WireUnavailable
from bench.contracts import WindowResult
from bench.meters import phases
from bench.meters.latency import StepTimer, sync
from bench.meters.memory import MemoryTracker
from bench.meters.utilization import UtilSampler

NCCL_WIRE_REASON = "NCCL moves bytes over NVLink/PCIe/IB, invisible to TCP socket counters"
def _fence() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


class Window:
    """Start after warmup, time each measured step with `timer.step()`, stop at the end.

    Everything here is read outside the timed steps: starting and stopping dump the
    flight recorder and read socket counters, neither of which touches the steps.

    Both ends are fences across ranks. Starting, each rank snapshots its socket counters,
    then all ranks meet in a barrier, then the flight-recorder window opens: otherwise a
    rank that leaves warmup first sends its first measured collective before a slower
    peer has snapshotted, and the peer's kernel counts those bytes before its window.
    Stopping, each rank snapshots and then meets the others: otherwise a rank that
    finishes first can destroy its process group, gloo on the peer closes that socket,
    and the peer's final snapshot loses every byte the socket carried (seen in CI: a
    4-rank signSGD trial at 0.75x of its modelled wire bytes, one rank's worth gone).
    The start barrier's few bytes land in the wire count and not in the logical records;
    it also starts every rank's first timed step together.
    """

    def __init__(self, device: torch.device, backend: str, *, track_comm: bool = True) -> None:
        self.device = device
        self.backend = backend
        self.track_comm = track_comm
        self.timer = StepTimer(device)
        self.memory = MemoryTracker(device)
        self.util = UtilSampler(device)
        self.comm = CommAccountant() if track_comm else None
        self.wire = WireCounter() if track_comm and backend == "gloo" else None
        self.link = LinkCounter()

    def measure(self, step: Callable[[], object], *, warmup: int, steps: int) -> WindowResult:
        """Run `warmup` untimed steps, then `steps` timed ones inside the window.

        Marks the rank's phases: warmup, window, then "eval" for whatever the workload does
        after the window (evaluation, generation) until it marks another phase.
        """
        phases.mark("warmup")
        for _ in range(warmup):
            step()
        phases.mark("window")
        self.start()
        for _ in range(steps):
            with self.timer.step():
                step()
        result = self.stop(steps)
        phases.mark("eval")
        return result

    def start(self) -> None:
        sync(self.device)
        self.memory.start()
        self.util.start()
        if self.wire:
            self.wire.start()
        self.link.start()
        _fence()
        if self.comm:
            self.comm.start()

    def stop(self, steps: int) -> WindowResult:
        sync(self.device)
        step_times = self.timer.samples_s()
        gpu_util = self.util.stop()
        try:
            wire, wire_reason = (self.wire.stop(), None) if self.wire else (None, NCCL_WIRE_REASON)
        except WireUnavailable as exc:
            wire, wire_reason = None, str(exc)
        link = self.link.stop()
        records = self.comm.stop() if self.comm else []
        _fence()
        result = WindowResult(
            step_times_s=step_times,
            memory=self.memory.stop(),
            comm_records=records_to_dicts(records),
            comm_summary=summarise(records, steps) if self.comm else None,
            wire=wire,
            gpu_util=gpu_util,
            link=link,
            link_reason=self.link.reason,
        )
        if not self.track_comm:
            result.wire_reason = result.comm_reason = "byte accounting disabled (track_comm=false)"
        elif wire is None:
            result.wire_reason = wire_reason
        return result

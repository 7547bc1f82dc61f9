"""GPU utilisation over a window: NVML's `utilization.gpu`, sampled by a thread while the steps run.

Only on CUDA; a CPU window gets no samples and a reason. The thread wakes every
`interval_s` and makes one NVML call (`torch.cuda.utilization`, which maps the CUDA index
to NVML's through CUDA_VISIBLE_DEVICES), so it takes no measurable time from the steps.
One sample is also taken when the window stops, so even a window shorter than the interval
has one; a window shorter than the driver's sample period (up to 1 s) is smeared by
whatever ran before it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch

from bench.contracts import GpuUtil

CPU_REASON = "CPU trial: no GPU"


def nvml_reader(device: torch.device) -> Callable[[], float]:
    """NVML's utilisation of `device` in percent, as a function of no arguments."""
    return lambda: float(torch.cuda.utilization(device))


class UtilSampler:
    """`start()` at the window start; `stop()` returns every sample taken until then.

    `read` is the reading function (NVML on CUDA; a fake in tests). On CPU, with no reader,
    nothing is sampled and the result carries the reason.
    """

    def __init__(self, device: torch.device, interval_s: float = 0.1, read: Callable[[], float] | None = None) -> None:
        self.interval_s = interval_s
        self._read = read if read is not None else (nvml_reader(device) if device.type == "cuda" else None)
        self._samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: str | None = None

    def _sample(self) -> None:
        try:
            self._samples.append(self._read())  # type: ignore[misc]
        except Exception as exc:  # NVML missing or not permitted: a reason, never a zero
            self._error = f"NVML utilisation unavailable: {exc}"
            self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def start(self) -> None:
        if self._read is None:
            return
        self._samples, self._error = [], None
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="gpu-util", daemon=True)
        self._thread.start()

    def stop(self) -> GpuUtil:
        if self._read is None:
            return GpuUtil(samples_percent=[], interval_s=self.interval_s, reason=CPU_REASON)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._error is None:
            self._sample()
        if self._error is not None:
            return GpuUtil(samples_percent=[], interval_s=self.interval_s, reason=self._error)
        return GpuUtil(samples_percent=list(self._samples), interval_s=self.interval_s)

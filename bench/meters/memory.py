"""Peak memory of one rank over a window: host RSS, torch's CUDA allocator, and NVML.

Meanings (also in the schema table, docs/schema.md):
- `rss_peak`: the kernel's resident-set high-water mark (VmHWM) for this rank's process,
  reset at the window start by writing 5 to /proc/self/clear_refs. Exact, not sampled.
  Where that is not possible, a psutil sampler thread reads RSS every 5 ms instead and
  `rss_peak_method` says so. Before the reset, garbage is collected and the C allocator
  hands freed heap pages back to the OS (glibc `malloc_trim`), so the window starts from
  what is live, not from what earlier set-up (a freed reference model) left behind.
- `rss_end`: psutil RSS at the window end.
- `cuda_max_allocated` / `cuda_max_reserved`: torch's caching allocator peaks (tensors
  vs. memory held from the driver), reset at the window start.
- `nvml_process_used`: device memory NVML attributes to this process (includes the CUDA
  context); `nvml_device_used`: used memory of the whole device (all processes).
A value that cannot be read is None and its reason is in `null_reasons`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import threading
from functools import cache

import psutil
import torch

from bench.contracts import MemoryPeaks

_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


def _read_hwm() -> int | None:
    try:
        with open(_STATUS) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@cache
def _malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc
        return None


def release_freed_memory() -> None:
    """Collect garbage and return the allocator's free pages to the OS, so RSS is what is live."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class _Sampler(threading.Thread):
    """Fallback when VmHWM cannot be reset: sample RSS with psutil every `interval` seconds."""

    def __init__(self, interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process()
        self.interval = interval
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def stop(self) -> int:
        self._stop.set()
        self.join()
        return max(self.peak, self.proc.memory_info().rss)


class MemoryTracker:
    """`start()` at the window start, `stop()` at its end returns the peaks in bytes."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._sampler: _Sampler | None = None
        self._hwm_reset = False

    def start(self) -> None:
        release_freed_memory()
        self._hwm_reset = _reset_hwm() and _read_hwm() is not None
        if not self._hwm_reset:
            self._sampler = _Sampler()
            self._sampler.start()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def stop(self) -> MemoryPeaks:
        reasons: dict[str, str] = {}
        if self._sampler is not None:
            rss_peak: int | None = self._sampler.stop()
            method = "psutil-sampled-5ms"
        else:
            rss_peak, method = _read_hwm(), "kernel-VmHWM"
        return MemoryPeaks(
            rss_end=psutil.Process().memory_info().rss,
            rss_peak=rss_peak,
            rss_peak_method=method,
            **self._cuda(reasons),
            **_nvml(self.device, reasons),
            null_reasons=reasons,
        )

    def _cuda(self, reasons: dict[str, str]) -> dict[str, int | None]:
        if self.device.type != "cuda":
            for k in ("cuda_max_allocated", "cuda_max_reserved"):
                reasons[k] = "CPU trial: no CUDA allocator"
            return {"cuda_max_allocated": None, "cuda_max_reserved": None}
        torch.cuda.synchronize(self.device)
        return {
            "cuda_max_allocated": torch.cuda.max_memory_allocated(self.device),
            "cuda_max_reserved": torch.cuda.max_memory_reserved(self.device),
        }


def _nvml(device: torch.device, reasons: dict[str, str]) -> dict[str, int | None]:
    keys = ("nvml_process_used", "nvml_device_used")
    if device.type != "cuda":
        reasons.update({k: "CPU trial: no GPU" for k in keys})
        return dict.fromkeys(keys)
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            # NVML numbers every GPU on the machine, CUDA only the visible ones: map through
            # CUDA_VISIBLE_DEVICES as torch.cuda.utilization does (there is no public helper).
            handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda._get_nvml_device_index(device))
            device_used = int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
            procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
            mine = [p.usedGpuMemory for p in procs if p.pid == os.getpid() and p.usedGpuMemory is not None]
            process_used = int(sum(mine)) if mine else None
            if process_used is None:
                reasons["nvml_process_used"] = "NVML lists no memory for this pid (containerised pid namespace?)"
            return {"nvml_process_used": process_used, "nvml_device_used": device_used}
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # NVML missing or not permitted: a reason, never a zero
        reasons.update({k: f"NVML unavailable: {exc}" for k in keys})
        return dict.fromkeys(keys)


def local_bytes(t: torch.Tensor) -> int:
    """Bytes this rank stores for `t`: a DTensor's local shard, else the tensor."""
    to_local = getattr(t, "to_local", None)
    local = to_local() if to_local is not None else t
    return local.numel() * local.element_size()


def model_state_bytes(params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer) -> int:
    """Params + grads + optimizer states this rank holds at the optimizer step, exactly.

    Grads are counted at their parameter's local size (every trainable parameter has one at
    the step; they are freed by `zero_grad(set_to_none=True)` right after), optimizer state
    from the tensors the optimizer really keeps (AdamW: exp_avg, exp_avg_sq and a step).
    """
    unique = list({id(p): p for p in params}.values())
    weights = sum(local_bytes(p) for p in unique)
    grads = sum(local_bytes(p) for p in unique if p.requires_grad)
    states = sum(local_bytes(v) for st in optimizer.state.values() for v in st.values() if isinstance(v, torch.Tensor))
    return weights + grads + states

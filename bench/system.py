"""Machine, software and git metadata for each run, and the history key that groups comparable results."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import socket
import subprocess
import time
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

from bench.config import canonical_json

PACKAGES = ("torch", "transformers", "pandas", "pyarrow", "matplotlib", "psutil", "nvidia-ml-py", "torchao", "gguf", "accelerate")
REPO_ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_info() -> dict[str, Any]:
    sha = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_sha": sha, "git_dirty": None if status is None or sha is None else bool(status)}


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (e.g. avx512_bf16, amx_fp16); empty where unreadable."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


# CPU flags with native fp16 arithmetic (Sapphire Rapids' AVX512-FP16, Granite Rapids' AMX-FP16).
NATIVE_FP16_FLAGS = frozenset({"avx512_fp16", "amx_fp16"})


def slow_fp16_reason(flags: frozenset[str] | None = None) -> str | None:
    """Why float16 matmuls are slow on this CPU, or None (it has native fp16, or its flags are unknown).

    Without native fp16 oneDNN refuses float16 Linear layers ("mkldnn_linear: fp16 path needs
    the cpu support avx_ne_convert or avx512_fp16") and torch runs its generic fallback GEMM.
    """
    flags = cpu_flags() if flags is None else flags
    if not flags or flags & NATIVE_FP16_FLAGS:
        return None
    return (f"this CPU has no native fp16 arithmetic (no {' or '.join(sorted(NATIVE_FP16_FLAGS))} flag): "
            "torch runs float16 matmuls in its generic fallback kernel, slower than float32 here")  # fmt: skip


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def gpu_info() -> dict[str, Any]:
    """GPU name/count/driver/CUDA version; all None on a machine without CUDA."""
    import torch

    info: dict[str, Any] = {"gpu_name": None, "gpu_count": 0, "gpu_driver": None, "cuda_version": None}
    if not torch.cuda.is_available():
        return info
    info.update(gpu_name=torch.cuda.get_device_name(0), gpu_count=torch.cuda.device_count(), cuda_version=torch.version.cuda)
    try:
        import pynvml

        pynvml.nvmlInit()
        info["gpu_driver"] = pynvml.nvmlSystemGetDriverVersion()
        pynvml.nvmlShutdown()
    except Exception:
        pass
    return info


@cache
def environment() -> dict[str, Any]:
    """Everything about where a run happens; computed once per process."""
    pkgs = package_versions()
    return {
        **git_info(),
        "torch_version": pkgs["torch"],
        "transformers_version": pkgs["transformers"],
        "python_version": platform.python_version(),
        "packages": pkgs,
        "cpu_model": cpu_model(),
        "cpu_cores": cpu_cores(),
        **gpu_info(),
        "hostname": socket.gethostname(),
    }


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


# Environment columns that make results comparable, as they are named in the history key.
HISTORY_CONTEXT = {"torch": "torch_version", "transformers": "transformers_version"}
HISTORY_HARDWARE = {"cpu": "cpu_model", "cores": "cpu_cores", "gpu": "gpu_name"}


def history_key(case: dict[str, Any], env: dict[str, Any]) -> str:
    """Hash of what makes two results comparable: the case, its software context, the hardware.

    Free-form info (hostname, git sha, timestamps) is left out, so the same benchmark on
    the same kind of machine keeps one history across commits (conbench's fingerprint).
    """
    context = {k: env.get(col) for k, col in HISTORY_CONTEXT.items()}
    hardware = {k: env.get(col) for k, col in HISTORY_HARDWARE.items()}
    blob = canonical_json({"case": case, "context": context, "hardware": hardware})
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def boottime() -> float:
    """Seconds on CLOCK_BOOTTIME: the clock the kernel stamps process creation with, one for
    every process of the machine (CLOCK_MONOTONIC where there is none)."""
    return time.clock_gettime(getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC))

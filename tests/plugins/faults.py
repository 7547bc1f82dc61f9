"""A test-only strategy that injects one fault into one rank: raise, SIGSEGV, os._exit, a hang in a collective, OOM.

`fault(kind=K, rank=R)` acts on rank R while the model is being prepared (Aspect.MODEL), before
the layout's first collective (DDP's parameter broadcast), so the other ranks are left waiting in
that collective, the situation a real crash mid-step produces:
- `raise`: starts a child process (`sleep`), then raises a RuntimeError;
- `sigsegv`: a real segmentation fault (a NULL read through ctypes), not a polite `kill`;
- `exit`: `os._exit(3)`, no traceback and no error file;
- `hang`: starts a child process too, then sleeps instead of joining the next collective, so
  every rank blocks until the trial's `timeout_s` (set it well below gloo's own 30 min collective
  timeout);
- `oom`: lowers RLIMIT_AS to what the rank already maps plus 64 MiB, then allocates 1 GiB.
"""

from __future__ import annotations

import ctypes
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

import torch

from bench.strategies import STRATEGIES
from bench.strategies.base import Aspect, Strategy, TrialState

KINDS = ("raise", "sigsegv", "exit", "hang", "oom")
MESSAGE = "deliberate fault from the fault test strategy"


@dataclass(kw_only=True, slots=True, frozen=True)
class FaultParams:
    kind: str = "raise"
    rank: int = 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")


def _vm_size() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def inject(kind: str) -> None:
    """Fail this process the way `kind` says (also used directly by executor tests)."""
    if kind in ("raise", "hang"):
        # A child of the rank, which the launcher must kill too once the trial is over: when the
        # rank is gone it is no longer the launcher's descendant, only its process group finds it.
        helper = subprocess.Popen(["sleep", "3600"])
        print(f"{MESSAGE}: helper pid {helper.pid}", file=sys.stderr, flush=True)
    if kind == "raise":
        raise RuntimeError(MESSAGE)
    if kind == "sigsegv":
        print(f"{MESSAGE}: reading address 0", file=sys.stderr, flush=True)
        ctypes.string_at(0)
    if kind == "exit":
        print(f"{MESSAGE}: os._exit(3)", file=sys.stderr, flush=True)
        os._exit(3)
    if kind == "hang":
        print(f"{MESSAGE}: sleeping instead of joining the collective", file=sys.stderr, flush=True)
        time.sleep(3600)
    if kind == "oom":
        limit = _vm_size() + (64 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
        print(f"{MESSAGE}: RLIMIT_AS set to {limit} B, allocating 1 GiB", file=sys.stderr, flush=True)
        torch.ones(1 << 28, dtype=torch.float32)


if "fault" not in STRATEGIES:

    @STRATEGIES.register("fault")
    class Fault(Strategy):
        name = "fault"
        summary = "test only: one rank raises, segfaults, exits, hangs or runs out of memory"
        aspect = Aspect.MODEL
        Params = FaultParams

        def apply(self, state: TrialState) -> None:
            if state.env.rank == self.params.rank:
                inject(self.params.kind)


def die_in_job(*args: object, **kwargs: object) -> None:
    """Stands in for `run_trial` in an executor test: the job's own process dies, no row comes back."""
    print(f"{MESSAGE}: the job process exits", file=sys.stderr, flush=True)
    os._exit(7)

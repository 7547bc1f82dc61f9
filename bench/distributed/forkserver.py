"""The fast launch path: ranks forked from a server that has torch, transformers and commbench imported.

Under `start_method="spawn"` every rank of every trial starts a fresh interpreter and
imports torch, transformers and the project again. Under "forkserver", torchelastic asks
Python's fork server for each rank instead: one process, started once, that imported
`PRELOAD` and then only ever forks. Every trial still gets fresh rank processes (a
monkeypatch in one trial dies with its ranks), but none of them pays the imports.

The server captures its working directory, `sys.path` and environment when it starts,
and its children inherit those, not the parent's at launch time. So it is keyed by them:
when any differs from what the running server started with, it is stopped and started
again (a test that sets an environment variable gets a server that has it). A launch's
own `env` is applied in each rank (`isolation.RankEntry`), so it never restarts the server.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import multiprocessing.forkserver as mpf
import os
import sys

from bench.errors import BenchError
from bench.system import boottime

START_METHODS = ("spawn", "forkserver")
# The default of `launch`, `commbench run/sweep --launch` and the test suite; the
# environment variable COMMBENCH_LAUNCH=spawn selects the old path everywhere.
DEFAULT_START_METHOD = os.environ.get("COMMBENCH_LAUNCH", "forkserver")
if DEFAULT_START_METHOD not in START_METHODS:
    raise BenchError(f"COMMBENCH_LAUNCH must be one of {', '.join(START_METHODS)}, got {DEFAULT_START_METHOD!r}")
# What a rank imports before it runs its workload. A module that fails to import here is
# skipped by the server (and imported by the rank as usual).
PRELOAD = [
    "bench.distributed.forkserver_guard",  # first: the server dies with this process
    "torch",
    "torch.distributed",
    "torch.distributed.elastic.multiprocessing",
    "transformers",
    "bench.runner.worker",
    "bench.strategies",
    "bench.workloads",
]


def method_for(device: str, requested: str) -> str:
    """The start method a trial on `device` can use: CUDA ranks are always spawned.

    The server imported torch and transformers, and a CUDA query during those imports
    (`cudaGetDeviceCount` marks the process as unsafe to fork) leaves every forked rank
    unable to start CUDA: "Cannot re-initialize CUDA in forked subprocess" (seen on an
    H200 with torch 2.11). A CUDA trial pays spawn's start-up instead, and its row says so.
    """
    return "spawn" if device.startswith("cuda") else requested


# Variables that change in this process without concerning ranks: pytest sets the first
# around each test phase; torchelastic's agent sets the second in its own (parent) process
# on the first launch, for its signal handlers. Neither may restart the server.
_VOLATILE_ENV = ("PYTEST_CURRENT_TEST", "TORCHELASTIC_SIGNALS_TO_HANDLE")
_started_with: str | None = None
last_start_s: float | None = None  # seconds the latest server start took (preload included)


def _fingerprint() -> str:
    env = {k: v for k, v in os.environ.items() if k not in _VOLATILE_ENV}
    key = repr((os.getcwd(), sys.path, sorted(env.items()), PRELOAD + _main_module()))
    return hashlib.sha256(key.encode()).hexdigest()


def _running() -> bool:
    return getattr(mpf._forkserver, "_forkserver_pid", None) is not None


def stop() -> None:
    """Stop the server (the next forkserver launch starts a new one)."""
    global _started_with
    mpf._forkserver._stop()
    _started_with = None


def ensure_started() -> float:
    """Start the server with `PRELOAD` unless one with this process's environment runs;
    wait until it has imported everything. Returns the seconds that took (0 when running)."""
    global _started_with, last_start_s
    key = _fingerprint()
    if _running() and _started_with == key:
        return 0.0
    if _running():
        stop()
    t0 = boottime()
    multiprocessing.set_forkserver_preload(PRELOAD + _main_module())
    mpf.ensure_running()
    # The server imports before it serves its first fork: one throwaway child waits for it,
    # so the preload is paid here and not inside the first trial's spawn phase.
    ctx = multiprocessing.get_context("forkserver")
    proc = ctx.Process(target=_noop)
    proc.start()
    proc.join()
    _started_with = key
    last_start_s = boottime() - t0
    return last_start_s


def _main_module() -> list[str]:
    """The launching script, which every rank re-runs as `__mp_main__` before its entry point:
    preloaded, its imports cost the ranks nothing. A `python -m` program is left out: ranks
    skip a package's `__main__` (commbench, pytest), and runpy warns when another module it
    re-runs was preloaded."""
    return ["__main__"] if getattr(sys.modules.get("__main__"), "__spec__", None) is None else []


def _noop() -> None:
    pass



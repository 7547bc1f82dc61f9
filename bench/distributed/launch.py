"""Run one function on N ranks through torch's elastic launcher and collect their dicts.

`launch()` is what `torchrun --standalone --nproc-per-node N` does, from Python:
`torch.distributed.launcher.api.elastic_launch` with a c10d rendezvous on a free local
port, so ranks get the real RANK/WORLD_SIZE/MASTER_* environment and torchelastic's
failure handling. Each rank returns a plain dict; a rank's exception comes back as its
traceback text.

The parent does not spin while ranks run: torchelastic's monitor loop sleeps between
checks (`monitor_interval`, 0.2 s here), so on a 2-core machine the parent's CPU time
over a trial is a few milliseconds (measured per trial as `launcher_cpu_s`).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from bench.contracts import PhaseTimes
from bench.distributed import forkserver, isolation
from bench.distributed.env import GATHERED
from bench.system import boottime

# Seconds between SIGTERM and SIGKILL when the agent stops its workers. torch 2.13 has the field;
# torch 2.11 (seen on a lent GPU machine) rejects the key and keeps its own default.
_SHUTDOWN = {"shutdown_timeout": 5} if "shutdown_timeout" in {f.name for f in fields(LaunchConfig)} else {}

MONITOR_INTERVAL_S = 0.2
# gloo's message when a peer died first: never the root cause when another rank failed.
_SECONDARY = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "SIGTERM",
    "Signals.SIGTERM",
    "caused by a remote worker crashing",  # torch 2.13's gloo when a peer's socket closed mid-collective
)


@dataclass(frozen=True, slots=True)
class Placement:
    """This machine's place in a multi-node run: what torchrun's --nnodes/--node-rank/--rdzv-endpoint say."""

    nnodes: int
    node_rank: int
    rdzv_endpoint: str


class TrialTimeout(Exception):
    """Raised in the parent when ranks outlive the trial's timeout; the agent then kills them."""


@dataclass
class LaunchResult:
    outputs: dict[int, Any] = field(default_factory=dict)  # rank -> returned dict
    error: str | None = None  # root-cause traceback tail when any rank failed
    failed_rank: int | None = None  # None also when no single rank failed (timeout, launch error)
    error_class: str | None = None  # exception | signal | exit | timeout | oom | launch (isolation.classify)
    stderr_tail: str | None = None  # the failed rank's last stderr lines; every rank's after a timeout
    timed_out: bool = False
    # Across nodes: False on a node whose ranks do not include global rank 0 (its node's
    # launcher has no rows to write; `outputs` is then empty).
    holds_rank0: bool = True
    wall_s: float = 0.0
    launcher_cpu_s: float = 0.0  # parent CPU time while ranks ran (proves it blocks)
    log_dir: str = ""
    # When the launch began and returned, on CLOCK_BOOTTIME (the ranks' phase clock).
    started_s: float = 0.0
    ended_s: float = 0.0
    start_method: str = forkserver.DEFAULT_START_METHOD
    # A failed launch: rank -> the timeline it journaled up to its failure (isolation.timelines).
    timelines: dict[int, PhaseTimes] = field(default_factory=dict)


def _quiet_torchelastic() -> None:
    # A failed rank is reported once, as a `failed` row with its traceback; torchelastic's
    # own error log of the same failure would only scroll the progress bar away.
    for name in ("torch.distributed.elastic", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _failure_text(f: Any) -> str:
    msg = f.message
    if isinstance(msg, dict):
        extra = msg.get("extraInfo", {})
        return extra.get("py_callstack") or msg.get("message", "") or str(msg)
    if f.exitcode is not None and f.exitcode > 0 and (not msg or "To enable traceback" in str(msg)):
        # torchelastic's placeholder for a rank that exited without an error file
        return f"exited with code {f.exitcode} and no Python traceback (os._exit, sys.exit in native code, or an abort)"
    return str(msg) or f"exit code {f.exitcode}"


class RootCause(NamedTuple):
    """The rank that failed first, its error text, and where that was found: the agent's
    collected `failure`, a rank's `error_file`, a `fatal_signal` report in its stderr, or
    its `silence` (gone with neither)."""

    rank: int
    error: str
    found_in: str


def _root_cause(exc: ChildFailedError, log_dir: Path | None = None) -> RootCause:
    failures = sorted(exc.failures.items(), key=lambda kv: kv[1].timestamp)
    text = _failure_text

    primary = [kv for kv in failures if not any(s in text(kv[1]) for s in _SECONDARY)]
    if primary:
        rank, failure = primary[0]
        return RootCause(rank, _tail(text(failure)), "failure")
    # Only a secondary error was collected: the rank that failed first may still have been
    # exiting when the agent saw its peer fail and stopped the group. Its error file
    # (attempt_N/<rank>/error.json, written before it exits) tells the real cause.
    rank, failure = failures[0]
    siblings = _sibling_errors(failure.error_file)
    for other, cause in siblings:
        if other not in exc.failures and not any(s in cause for s in _SECONDARY):
            return RootCause(other, _tail(cause), "error_file")
    # A rank killed by a signal writes no error file, and the agent may have collected its
    # peer first (under the fork server a death reaches the agent one hop later). Its stderr
    # holds faulthandler's "Fatal Python error: <signal>" (torchelastic's `record` enables it).
    for other in isolation.fatally_signalled(log_dir) if log_dir is not None else []:
        if other not in exc.failures:
            return RootCause(other, isolation.fatal_signal(isolation.stderr_tail(log_dir, other) or "") or "fatal signal", "fatal_signal")
    # A rank that left neither an error file nor a fatal-signal report exited on its own
    # (os._exit, exit() in native code): the peer that saw its connection close is not the cause.
    reported = set(exc.failures) | {r for r, _ in siblings}
    for other in sorted(isolation.rank_pids(log_dir)) if log_dir is not None else []:
        if other not in reported:
            return RootCause(other, f"rank {other} exited without a Python traceback or error file (os._exit, "
                                    "sys.exit in native code); its exit code went to the fork server, not the launcher",
                             "silence")  # fmt: skip
    return RootCause(rank, _tail(text(failure)), "failure")


def _sibling_errors(error_file: str) -> list[tuple[int, str]]:
    """(rank, traceback) from the other ranks' torchelastic error files of the same attempt."""
    attempt = Path(error_file).parent.parent if error_file and error_file != "<N/A>" else None
    found = []
    for path in sorted(attempt.glob("*/error.json")) if attempt and attempt.is_dir() else []:
        if not path.parent.name.isdigit():
            continue
        try:
            msg = json.loads(path.read_text())["message"]
        except (OSError, ValueError, KeyError):
            continue
        found.append((int(path.parent.name), msg.get("extraInfo", {}).get("py_callstack") or msg.get("message", "")))
    return found


def _classify(exc: ChildFailedError, cause: RootCause, log_dir: Path) -> tuple[str, str | None]:
    """(error class, stderr tail) of the root-cause rank."""
    tail = isolation.stderr_tail(log_dir, cause.rank)
    if cause.found_in == "failure":
        failure = exc.failures[cause.rank]
        return isolation.classify(failure.exitcode, isinstance(failure.message, dict), cause.error, tail), tail
    # Not collected by the agent, so its exit code is unknown: an error file means it raised.
    return isolation.classify(None, cause.found_in == "error_file", cause.error, tail), tail


class _Alarm:
    """SIGALRM-based timeout for the main thread; a no-op elsewhere (signals need it)."""

    def __enter__(self) -> None:
        if self.active:
            self._old = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc: object) -> None:
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old)

    def __init__(self, seconds: float, log_dir: Path) -> None:
        self.seconds = seconds
        self.log_dir = log_dir
        self.active = threading.current_thread() is threading.main_thread()

    def _fire(self, signum: int, frame: object) -> None:
        isolation.dump_stacks(self.log_dir)  # the hung ranks' stacks, into their stderr logs, before they are killed
        raise TrialTimeout(
            f"trial exceeded its timeout of {self.seconds:.0f} s; ranks were killed "
            "(no single rank failed: each rank's stack at the timeout is in stderr_tail)"
        )


def ungather(outputs: dict[int, Any]) -> tuple[dict[int, Any], bool]:
    """Every rank's dict from the envelope that global rank 0 returned; ({}, False) on other nodes."""
    for value in outputs.values():
        if isinstance(value, dict) and value.get("status") == GATHERED and value.get("ranks") is not None:
            return dict(enumerate(value["ranks"])), True
    return {}, False


def launch(
    entry: Callable[..., Any],
    payload: Any,
    *,
    nprocs: int,
    log_dir: Path,
    timeout_s: float,
    env: dict[str, str] | None = None,
    start_method: str = forkserver.DEFAULT_START_METHOD,
    nnodes: int = 1,
    node_rank: int = 0,
    rdzv_endpoint: str | None = None,
    run_id: str | None = None,
    local_addr: str | None = None,
) -> LaunchResult:
    """Run `entry(payload)` on `nprocs` local ranks; blocks until all finish or fail.

    `entry` must be importable by module path (ranks start from a fresh interpreter, or
    are forked from the preloaded server under `start_method="forkserver"`; see
    `bench.distributed.forkserver`). Rank stdout/stderr go to files under `log_dir`.

    Across `nnodes` > 1 nodes every node calls this with the same `rdzv_endpoint`
    (HOST:PORT, a c10d rendezvous whose store node 0 hosts) and `run_id`; global ranks are
    assigned by the rendezvous. `local_addr` is the address the other nodes reach this
    one at (default: a lookup of the hostname, which in a network namespace is not the
    namespace's address). `entry` then returns the gathered envelope of
    `bench.runner.worker` on global rank 0, unpacked here into every rank's dict.
    """
    _quiet_torchelastic()
    # As torchrun does, and forced: torch starts its OpenMP pool at import with this many
    # threads, before `init_rank` pins the compute thread, so a bigger pool would keep the
    # full mask. `init_rank` sets the real count after pinning; those workers inherit it.
    env = {"OMP_NUM_THREADS": "1", **(env or {})}
    if start_method == "forkserver":
        forkserver.ensure_started()
    log_dir.mkdir(parents=True, exist_ok=True)
    if nnodes > 1 and not (rdzv_endpoint and run_id):
        raise ValueError("a launch across nodes needs the rendezvous endpoint and a run id shared by all nodes")
    config = LaunchConfig(
        min_nodes=nnodes,
        max_nodes=nnodes,
        nproc_per_node=nprocs,
        run_id=run_id or uuid.uuid4().hex[:12],
        rdzv_backend="c10d",
        rdzv_endpoint=rdzv_endpoint or "127.0.0.1:0",
        rdzv_configs={"is_host": node_rank == 0} if nnodes > 1 else {},
        local_addr=local_addr,
        max_restarts=0,
        monitor_interval=MONITOR_INTERVAL_S,
        start_method=start_method,
        logs_specs=DefaultLogsSpecs(log_dir=str(log_dir), redirects=Std.ALL, tee=Std.NONE),
        **_SHUTDOWN,
    )
    result = LaunchResult(log_dir=str(log_dir), start_method=start_method, started_s=boottime())
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        with _Alarm(timeout_s, log_dir):
            result.outputs = dict(elastic_launch(config, isolation.RankEntry(entry, log_dir, env))(payload))
        if nnodes > 1:
            result.outputs, result.holds_rank0 = ungather(result.outputs)
    except ChildFailedError as exc:
        cause = _root_cause(exc, log_dir)
        result.failed_rank, result.error = cause.rank, cause.error
        result.error_class, result.stderr_tail = _classify(exc, cause, log_dir)
    except TrialTimeout as exc:
        result.timed_out, result.error, result.error_class = True, str(exc), "timeout"
        result.stderr_tail = isolation.stack_dumps(log_dir, nprocs)
    except SignalException:
        raise  # the runner itself was told to stop: not this trial's failure
    except Exception as exc:  # rendezvous or spawn failed: the trial fails, the sweep goes on
        result.error, result.error_class = f"launch failed: {type(exc).__name__}: {exc}", "launch"
    finally:
        isolation.reap(log_dir)  # anything the ranks left behind (their children; ranks torchelastic could not stop)
        if result.error is not None:
            result.timelines = isolation.timelines(log_dir)
        result.wall_s = time.perf_counter() - t0
        result.launcher_cpu_s = time.process_time() - c0
        result.ended_s = boottime()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return result

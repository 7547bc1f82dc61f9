"""Fault isolation for launched ranks: they die with their launcher, leave nothing behind, and a failure is classified.

Every rank runs its entry through `RankEntry`, which first
- asks the kernel to SIGKILL it when the launcher dies (`PR_SET_PDEATHSIG`): a runner killed
  with SIGKILL runs no cleanup, and torchelastic's own teardown would never reach the ranks;
- moves into a process group of its own, so whatever it starts (its children) can be killed
  with it after the trial (`reap`), even when the rank itself is already gone;
- registers faulthandler on SIGUSR1, so a hung rank can be asked for every thread's Python stack
  before it is killed (`dump_stacks`): the only evidence a timeout leaves;
- writes its pid to `<log_dir>/pids/<rank>`, which is how the launcher finds the groups.

`classify` names what went wrong from torchelastic's failure record and the rank's stderr:
exception | signal | exit | timeout | oom (the other classes, contract, aggregation, launch and
job, are given where they happen).
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from bench.contracts import PhaseTimes
from bench.meters import phases

PR_SET_PDEATHSIG = 1
STACK_SIGNAL = signal.SIGUSR1
STDERR_LINES = 40
# faulthandler's report of a fatal signal, and the signal behind each of its messages.
FATAL_SIGNAL_MARKER = "Fatal Python error: "
FATAL_SIGNALS = {
    "Segmentation fault": "SIGSEGV", "Bus error": "SIGBUS", "Aborted": "SIGABRT",
    "Floating point exception": "SIGFPE", "Illegal instruction": "SIGILL",
}  # fmt: skip
STDERR_LINE_CHARS = 300  # faulthandler's "Extension modules: ..." line alone is ~4 kB
DUMP_FRAMES = 12  # innermost frames kept per thread of a stack dump
_DUMP_HEADER = re.compile(r"^(Current thread|Thread) 0x[0-9a-f]+ \(most recent call first\):$")
# Text in a rank's error or stderr that means it ran out of memory, whatever it died of.
OOM_MARKERS = (
    "MemoryError",
    "can't allocate memory",
    "Cannot allocate memory",
    "std::bad_alloc",
    "OutOfMemoryError",
    "CUDA out of memory",
)
# A collective or the store giving up waiting on a peer (gloo, c10d store, NCCL watchdog).
TIMEOUT_MARKERS = ("Timed out waiting", "timed out", "DistStoreError", "Watchdog caught collective operation timeout")


def pid_dir(log_dir: Path) -> Path:
    return log_dir / "pids"


def timeline_path(log_dir: Path, rank: int) -> Path:
    """Where global rank `rank` journals its phase marks as it enters them (`bench.meters.phases`)."""
    return log_dir / "timeline" / str(rank)


def timelines(log_dir: Path) -> dict[int, PhaseTimes]:
    """rank -> the timeline it journaled, up to its last mark (what a failed trial's ranks left)."""
    directory = log_dir / "timeline"
    found = {}
    for path in directory.iterdir() if directory.is_dir() else ():
        if path.name.isdigit() and (timeline := phases.read_journal(path)) is not None:
            found[int(path.name)] = timeline
    return found


def die_with_parent() -> bool:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux); False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0


def _set_parent_death_signal(launcher_pid: int) -> None:
    """SIGKILL this rank when its parent dies: the launcher (spawn), or the fork server, which
    itself dies with the launcher (`bench.distributed.forkserver_guard`): Python's server would
    otherwise outlive a killed launcher, since every process it forked holds its "alive" pipe."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    if not die_with_parent():
        return  # not fatal: the rank then only lacks this safety net
    # The parent may have died before the prctl: then the signal never comes, and we are an orphan.
    if os.getppid() != parent or not _launched_by(parent, launcher_pid):
        os._exit(1)


def _launched_by(parent: int, launcher_pid: int) -> bool:
    if parent == launcher_pid:
        return True
    try:
        return psutil.Process(parent).ppid() == launcher_pid  # a forkserver or similar helper
    except psutil.Error:
        return False


class RankEntry:
    """Picklable wrapper a rank runs: the launch's environment, isolation set-up, then the real entry.

    `env` is set again inside the rank because a rank forked from the fork server inherits
    the server's environment, not the launcher's at launch time.
    """

    def __init__(self, entry: Callable[[Any], Any], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.entry = entry
        self.log_dir = log_dir
        self.env = dict(env or {})
        self.launcher_pid = os.getpid()
        # torchelastic names the job (and its error records) after the entry
        self.__name__ = getattr(entry, "__name__", "rank_entry")
        self.__qualname__ = getattr(entry, "__qualname__", self.__name__)

    def __call__(self, payload: Any) -> Any:
        os.environ.update(self.env)
        _set_parent_death_signal(self.launcher_pid)
        os.setpgid(0, 0)
        faulthandler.register(STACK_SIGNAL, file=sys.stderr, all_threads=True)
        pids = pid_dir(self.log_dir)
        pids.mkdir(parents=True, exist_ok=True)
        rank = os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0"))
        journal = timeline_path(self.log_dir, int(os.environ.get("RANK", rank)))
        journal.parent.mkdir(parents=True, exist_ok=True)
        os.environ[phases.JOURNAL_ENV] = str(journal)
        (pids / rank).write_text(str(os.getpid()))  # last: SIGUSR1 is safe from here on
        return self.entry(payload)


def rank_pids(log_dir: Path) -> dict[int, int]:
    """rank -> pid, as the ranks of the trial logged under `log_dir` wrote them."""
    found = {}
    directory = pid_dir(log_dir)
    for path in directory.iterdir() if directory.is_dir() else ():
        try:
            found[int(path.name)] = int(path.read_text())
        except (OSError, ValueError):
            continue  # written as the rank died: the group is reaped by the launcher's teardown
    return found


def dump_stacks(log_dir: Path, wait_s: float = 1.0) -> None:
    """Ask every live rank for its threads' Python stacks (into its stderr log)."""
    sent = False
    for pid in rank_pids(log_dir).values():
        try:
            os.kill(pid, STACK_SIGNAL)
            sent = True
        except (ProcessLookupError, PermissionError):
            continue
    if sent:
        time.sleep(wait_s)  # faulthandler writes from the signal handler, at once; give slow disks a moment


def reap(log_dir: Path) -> list[int]:
    """SIGKILL each rank's process group: the rank if still alive, and anything it started.

    Returns the groups that still had a member (0 after a clean trial).
    """
    killed = []
    for pid in rank_pids(log_dir).values():
        try:
            os.killpg(pid, signal.SIGKILL)
            killed.append(pid)
        except (ProcessLookupError, PermissionError):
            continue
    return killed


def stderr_tail(log_dir: Path, rank: int, lines: int = STDERR_LINES) -> str | None:
    """The last lines of a rank's stderr log (torchelastic's `<run>/attempt_N/<rank>/stderr.log`)."""
    logs = sorted(log_dir.glob(f"*/attempt_*/{rank}/stderr.log"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return None
    text = logs[-1].read_text(errors="replace").strip()
    if not text:
        return None
    return "\n".join(line[:STDERR_LINE_CHARS] for line in text.splitlines()[-lines:])


def last_stack_dump(text: str, frames: int = DUMP_FRAMES, before: int = 5) -> str | None:
    """The last faulthandler dump in `text`: each thread's innermost `frames` frames, after the
    `before` lines the rank wrote just before it. A dump lists the innermost call first and runs
    to hundreds of lines (imports, the launcher's wrappers), so a plain tail would keep only the
    outermost frames, the least telling ones."""
    lines = text.splitlines()
    heads = [i for i, line in enumerate(lines) if _DUMP_HEADER.match(line)]
    if not heads:
        return None
    start = heads[-1]
    for h in reversed(heads[:-1]):  # earlier threads of the same dump: only frame lines in between
        if not all(line.startswith("  ") or not line.strip() for line in lines[h + 1 : start]):
            break
        start = h
    out = [line[:STDERR_LINE_CHARS] for line in lines[max(0, start - before) : start]]
    block: list[str] = []
    for line in [*lines[start:], ""]:
        if _DUMP_HEADER.match(line) or not line.startswith("  "):
            out.extend(block[: frames + 1] + (["  ..."] if len(block) > frames + 1 else []))
            block = [line] if _DUMP_HEADER.match(line) else []
            if not block and line.strip() and not line.startswith("Extension modules"):
                break  # the dump is over
        else:
            block.append(line[:STDERR_LINE_CHARS])
    return "\n".join(out)


def stack_dumps(log_dir: Path, ranks: int) -> str | None:
    """Every rank's last stack dump (else its stderr tail), each under `--- rank N ---`: a timeout's evidence."""
    parts = []
    for r in range(ranks):
        logs = sorted(log_dir.glob(f"*/attempt_*/{r}/stderr.log"), key=lambda p: p.stat().st_mtime)
        text = logs[-1].read_text(errors="replace") if logs else ""
        found = last_stack_dump(text) or stderr_tail(log_dir, r, DUMP_FRAMES)
        if found:
            parts.append(f"--- rank {r} ---\n{found}")
    return "\n".join(parts) or None


def fatally_signalled(log_dir: Path) -> list[int]:
    """Ranks of the last launch under `log_dir` whose stderr shows a fatal signal (faulthandler's report)."""
    found = []
    for path in sorted(log_dir.glob("*/attempt_*/*/stderr.log")):
        if path.parent.name.isdigit() and FATAL_SIGNAL_MARKER in path.read_text(errors="replace"):
            found.append(int(path.parent.name))
    return found


def fatal_signal(stderr: str) -> str | None:
    """"Signal SIGSEGV (Fatal Python error: Segmentation fault)" from a rank's stderr, or None."""
    for line in stderr.splitlines():
        if line.startswith(FATAL_SIGNAL_MARKER):
            what = line[len(FATAL_SIGNAL_MARKER) :].strip()
            return f"Signal {FATAL_SIGNALS.get(what, 'unknown')} ({line.strip()})"
    return None


def classify(exitcode: int | None, has_traceback: bool, error: str, stderr: str | None) -> str:
    """exception | signal | exit | timeout | oom, for one failed rank."""
    text = f"{error}\n{stderr or ''}"
    if any(m in text for m in OOM_MARKERS):
        return "oom"
    if has_traceback and any(m in error for m in TIMEOUT_MARKERS):
        return "timeout"
    if exitcode is not None and exitcode < 0:
        return "signal"
    if exitcode is None and FATAL_SIGNAL_MARKER in text:  # found by its stderr, its exit code unseen
        return "signal"
    if has_traceback:
        return "exception"
    return "exit"

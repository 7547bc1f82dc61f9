"""A rank's timeline: when its process started, and when it entered each phase of the trial.

Every time here is on CLOCK_BOOTTIME, the clock the kernel stamps process creation with,
so the parent can subtract a rank's times from its own (`bench.runner.phases`). A rank is
one process per trial, so the marks are module state, cleared when the worker starts.

Where the launch names a journal ($COMMBENCH_TIMELINE, set by `bench.distributed.isolation`),
each mark is also appended to it as it happens, so a rank that fails, is killed or hangs
leaves its timeline behind (`read_journal`): a failed row still says where its time went.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.contracts import PhaseTimes
from bench.system import boottime

JOURNAL_ENV = "COMMBENCH_TIMELINE"
_START = "process_start"
_marks: list[tuple[str, float]] = []
_started: float | None = None


def process_start() -> float | None:
    """When the kernel created this process, on CLOCK_BOOTTIME (field 22 of /proc/self/stat,
    in clock ticks since boot); None off Linux."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def reset(started: float | None = None) -> None:
    """A new timeline for a rank whose process the kernel created at `started`."""
    global _started
    _marks.clear()
    _started = started
    _journal(_START, started, mode="w")


def mark(phase: str) -> None:
    """This rank enters `phase` now (it lasts until the next mark)."""
    now = boottime()
    _marks.append((phase, now))
    _journal(phase, now)


def _journal(name: str, when: float | None, mode: str = "a") -> None:
    path = os.environ.get(JOURNAL_ENV)
    if path:
        with open(path, mode) as f:
            f.write(f"{name}\t{when!r}\n")


def read_journal(path: Path) -> PhaseTimes | None:
    """The timeline a rank journaled to `path`, up to its last mark; None without one.

    A line cut short (the rank died writing it) ends the timeline there.
    """
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    entries = [line.split("\t") for line in lines]
    if not entries or len(entries[0]) != 2 or entries[0][0] != _START:
        return None
    started = None if entries[0][1] == "None" else float(entries[0][1])
    marks: list[tuple[str, float]] = []
    for entry in entries[1:]:
        try:
            name, when = entry
            marks.append((name, float(when)))
        except ValueError:
            break
    return PhaseTimes(process_start_s=started, marks=marks)


def timeline() -> PhaseTimes:
    """The marks so far, closed by a "done" mark now."""
    mark("done")
    return PhaseTimes(process_start_s=_started, marks=list(_marks))

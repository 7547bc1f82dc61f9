"""A rank's timeline: when its process started, and when it entered each phase of the trial.

Every time here is on CLOCK_BOOTTIME, the clock the kernel stamps process creation with,
so the parent can subtract a rank's times from its own (`bench.runner.phases`). A rank is
one process per trial, so the marks are module state, cleared when the worker starts.
"""

from __future__ import annotations

import os

from bench.contracts import PhaseTimes
from bench.system import boottime

_marks: list[tuple[str, float]] = []


def process_start() -> float | None:
    """When the kernel created this process, on CLOCK_BOOTTIME (field 22 of /proc/self/stat,
    in clock ticks since boot); None off Linux."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def reset() -> None:
    _marks.clear()


def mark(phase: str) -> None:
    """This rank enters `phase` now (it lasts until the next mark)."""
    _marks.append((phase, boottime()))


def timeline(started: float | None) -> PhaseTimes:
    """The marks so far, closed by a "done" mark now."""
    mark("done")
    return PhaseTimes(process_start_s=started, marks=list(_marks))

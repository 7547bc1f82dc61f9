"""The machine's noise during a sweep: a fixed reference workload timed between launches, and the CPU others used.

Between launches (no rank of the sweep running) the sweep times a fixed single-threaded
workload (`REFERENCE`: sorting the same 64 Ki doubles `SORTS` times; ~0.1 s on a quiet core)
a few times in a row, and reads /proc/stat around it: the cores busy with anything but
this process are other programs' load. A sweep is **noisy** when the reference's timings
spread by more than `NOISY_CV` (coefficient of variation over every timing of the sweep),
or when other programs kept more than `NOISY_FOREIGN_SHARE` of the cores busy on median
while the reference ran. The 1-minute load average is recorded too, but it counts the
sweep's own ranks (it decays over a minute, so it still holds the last launch), and so
decides nothing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

SORTS = 20
SAMPLES_PER_BURST = 3
# Calibrated on this 2-core machine (2026-12-04): the reference's CV over a whole quiet sweep was
# 8.9% and 9.4% (two sweeps of `make stability`, 0.01-0.02 cores busy elsewhere), 28% under load.
# A 5% threshold flagged both quiet sweeps; between launches the sweep's own just-ended ranks
# and the kernel's cleanup still perturb a 0.1 s reference.
NOISY_CV = 0.15
NOISY_FOREIGN_SHARE = 0.25
REFERENCE = f"{SORTS} sorts of 65536 float64 (one thread), {SAMPLES_PER_BURST} timings per burst between launches"


def _busy_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all cores from /proc/stat; None where it is not readable."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def reference_data() -> np.ndarray:
    """The reference's input: the same 64 Ki doubles every time."""
    return np.random.default_rng(0).standard_normal(1 << 16)


def reference_once(data: np.ndarray) -> float:
    start = time.perf_counter()
    for _ in range(SORTS):
        np.sort(data)
    return time.perf_counter() - start


@dataclass
class NoiseMeter:
    """Reference timings and foreign load collected over one sweep; `columns` summarises them."""

    cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    timings_s: list[float] = field(default_factory=list)
    foreign_cores: list[float] = field(default_factory=list)
    load_1m: list[float] = field(default_factory=list)
    _data: np.ndarray = field(default_factory=reference_data)

    def sample(self) -> None:
        """One burst of the reference workload, with the other programs' CPU use around it."""
        before, cpu0, t0 = _busy_jiffies(), _own_cpu_s(), time.monotonic()
        self.timings_s += [reference_once(self._data) for _ in range(SAMPLES_PER_BURST)]
        after, cpu1, t1 = _busy_jiffies(), _own_cpu_s(), time.monotonic()
        if before is not None and after is not None and after[1] > before[1] and t1 > t0:
            busy_cores = (after[0] - before[0]) / (after[1] - before[1]) * self.cores
            self.foreign_cores.append(max(0.0, busy_cores - (cpu1 - cpu0) / (t1 - t0)))
        if hasattr(os, "getloadavg"):
            self.load_1m.append(os.getloadavg()[0])

    def columns(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The noise columns of every row of the sweep, and null reasons for those it could not measure."""
        reasons: dict[str, str] = {}
        out: dict[str, Any] = {"noise_ref_s": list(self.timings_s)}
        cv = None
        if len(self.timings_s) >= 2:
            t = np.asarray(self.timings_s)
            cv = float(t.std(ddof=1) / t.mean())
        else:
            reasons["noise_ref_cv"] = "fewer than two reference timings"
        out["noise_ref_cv"] = cv
        foreign = float(np.median(self.foreign_cores)) if self.foreign_cores else None
        if foreign is None:
            reasons["noise_foreign_cores"] = "/proc/stat not readable"
        out["noise_foreign_cores"] = foreign
        out["load_avg_1m"] = max(self.load_1m) if self.load_1m else None
        if not self.load_1m:
            reasons["load_avg_1m"] = "os.getloadavg not available"
        if cv is None and foreign is None:
            reasons["noisy"] = "no reference timing"
            out["noisy"] = None
        else:
            out["noisy"] = bool((cv is not None and cv > NOISY_CV) or (foreign is not None and foreign > NOISY_FOREIGN_SHARE * self.cores))
        return out, reasons


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def describe(row: dict[str, Any] | Any) -> str:
    """`quiet: reference CV 1.2%, 0.05 of 2 cores busy elsewhere, load 0.4` or `NOISY: ...` from a row's noise columns."""
    get = row.get
    cv, foreign, load, noisy = get("noise_ref_cv"), get("noise_foreign_cores"), get("load_avg_1m"), get("noisy")
    cores = get("cpu_cores")
    if noisy is None or (isinstance(noisy, float) and noisy != noisy):
        return "noise not measured"
    parts = []
    if cv is not None and cv == cv:
        parts.append(f"reference CV {cv * 100:.1f}% (noisy above {NOISY_CV * 100:.0f}%)")
    if foreign is not None and foreign == foreign:
        on = f" of {int(cores)}" if cores is not None and cores == cores else ""
        parts.append(f"{foreign:.2f}{on} cores busy elsewhere (noisy above {NOISY_FOREIGN_SHARE * 100:.0f}% of them)")
    if load is not None and load == load:
        parts.append(f"1-min load {load:.1f} (the sweep's own included)")
    return ("NOISY: " if noisy else "quiet: ") + ", ".join(parts)


def describe_run(rows_of_run: pd.DataFrame) -> tuple[bool | None, str]:
    """A run's noise verdict (None: not measured) and `describe` line, from its first row that measured it."""
    if "noisy" not in rows_of_run:
        return None, "noise not measured (rows from before it was)"
    measured = rows_of_run[rows_of_run["noisy"].notna()]
    if not len(measured):
        return None, "noise not measured"
    first = measured.iloc[0].to_dict()
    return bool(first["noisy"]), describe(first)

"""Confidence intervals over launches: the median with a distribution-free interval, bootstrap CIs, ratios.

A trial's launches are its statistical unit: each launch gives one step p50 (and tokens/s,
algbw, ...), and what varies between sweeps is mostly what varies between launches (where
the ranks' memory landed, what else ran). `median_ci` gives the median of such values with
the order-statistic interval (distribution-free: no normality assumed, no seed); below six
values the widest such interval, [min, max], covers the median with less than 95%
(75% at 3, 87.5% at 4, 93.75% at 5), and the interval says so in its `level`. Under three
values there is no interval: null with a reason, never a made-up one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
MIN_LAUNCHES = 3  # fewer: no launch-level interval


@dataclass(frozen=True, slots=True)
class Estimate:
    """A median with its confidence interval; `low`/`high` None (and `reason` set) when there is none."""

    value: float | None
    low: float | None
    high: float | None
    n: int
    level: float | None  # the interval's coverage of the true median (distribution-free), None without one
    reason: str | None = None

    @property
    def half_width(self) -> float | None:
        """Half the interval relative to the median (0.03: ±3%); None without an interval or a zero median."""
        if self.low is None or self.high is None or not self.value:
            return None
        return (self.high - self.low) / 2 / abs(self.value)

    def overlaps(self, other: Estimate) -> bool | None:
        """Whether the two intervals share a point; None when either has none."""
        if None in (self.low, self.high, other.low, other.high):
            return None
        return not (self.high < other.low or other.high < self.low)  # type: ignore[operator]


def order_statistic_level(n: int, k: int) -> float:
    """Coverage of [x_(k), x_(n+1-k)] (1-based order statistics) for the median of a continuous distribution."""
    tail = sum(math.comb(n, i) for i in range(k)) / 2**n
    return 1.0 - 2.0 * tail


def median_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """The median of `values` and the narrowest symmetric order-statistic interval covering it with
    at least `confidence`; [min, max] (with its lower level) when no interval reaches it."""
    arr = np.sort(np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64))
    n = len(arr)
    if n == 0:
        return Estimate(None, None, None, 0, None, "no value")
    med = float(np.median(arr))
    if n < MIN_LAUNCHES:
        what = "one launch" if n == 1 else f"{n} launches"
        return Estimate(med, None, None, n, None, f"{what}: a launch-level CI needs {MIN_LAUNCHES} or more")
    k = 1
    while k + 1 <= n // 2 and order_statistic_level(n, k + 1) >= confidence:
        k += 1
    return Estimate(med, float(arr[k - 1]), float(arr[n - k]), n, order_statistic_level(n, k))


def bootstrap_median_ci(values: Sequence[float], confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float, float]:
    """The median with a percentile-bootstrap CI (scipy, fixed seed); NaN bounds under two values.

    For many paired values (per-trial ratios of an A/B benchmark), where the bootstrap is sound.
    """
    from scipy import stats

    arr = np.asarray(values, dtype=np.float64)
    if len(arr) < 2:
        return float(arr[0]), float("nan"), float("nan")
    ci = stats.bootstrap((arr,), np.median, confidence_level=confidence, random_state=seed).confidence_interval
    return float(np.median(arr)), float(ci.low), float(ci.high)


def paired_ratios(cand: dict[int, float], base: dict[int, float]) -> list[float]:
    """candidate / base for every round measured on both sides (round -> value): ratios within one round."""
    return [cand[r] / base[r] for r in sorted(cand.keys() & base.keys()) if base[r]]


def launch_verdict(base: Estimate, cand: Estimate, threshold: float) -> tuple[str, str]:
    """`worse`/`better` only when both sides have launch-level CIs that do not overlap and the
    medians differ by more than `threshold` (relative); else `within noise`, with why."""
    if base.low is None or cand.low is None:
        why = base.reason if base.low is None else cand.reason
        return "within noise", f"no launch-level CI ({why})"
    assert base.value is not None and cand.value is not None
    change = cand.value / base.value - 1.0 if base.value else 0.0
    if base.overlaps(cand):
        return "within noise", "launch CIs overlap"
    if abs(change) <= threshold:
        return "within noise", f"CIs separate but the change is within the {threshold * 100:.3g}% threshold"
    return ("worse" if change > 0 else "better"), "launch CIs separate"

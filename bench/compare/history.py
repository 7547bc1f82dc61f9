"""Persistent steps in a history of runs: change-point detection on per-run medians, not a threshold on one run.

For every history key and metric, the runs are ordered by start time and reduced to one value each
(the median of the run's samples or values). `ruptures`' PELT then finds the segmentation that
minimises the sum of absolute deviations from each segment's median plus a penalty per change:

- the L1 (median) cost makes a single-run blip worthless to split off: with segments of at least
  `min_size` runs, the blip never moves its segment's median, so it buys no cost reduction;
- the penalty is `penalty_scale * sigma * ln(n)`, with sigma a robust noise estimate, the MAD of
  successive differences (a step adds one large difference, which the median ignores). With
  scale 3, 30 runs of pure Gaussian noise give a false step about once in a thousand series,
  and steps of 5 sigma are placed at the right run in about 98% of series (simulated).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import ruptures

from bench.compare.metrics import METRICS, Metric, fmt_change, fmt_value, values
from bench.compare.thresholds import Threshold, threshold_for
from bench.compare.trials import Status, TrialRef
from bench.errors import BenchError

MIN_SIZE = 3
PENALTY_SCALE = 3.0
# The normal distribution's MAD-to-sigma factor; successive differences have sqrt(2) x the noise.
_MAD_TO_SIGMA = 1.482602218505602 / math.sqrt(2.0)


@dataclass(frozen=True, slots=True)
class Step:
    """A persistent change of one metric of one trial, starting at the run of `git_sha`."""

    trial: TrialRef
    metric: str
    index: int  # position of the step's first run among the ordered runs that measured this metric
    run_id: str
    git_sha: str | None
    before: float  # median of the per-run values of the segment before the step
    after: float  # and of the segment from the step on
    rel_change: float | None  # after / before - 1; None when before is 0
    direction: str  # "up" or "down"; every metric is better when lower
    threshold: float
    regression: bool  # up, and by more than the metric's threshold
    unit: str


@dataclass(frozen=True, slots=True)
class History:
    """Every step found, over how many (trial, metric) series and runs."""

    steps: tuple[Step, ...]
    series: int
    runs: int

    def regressions(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.regression)

    def has_regressions(self) -> bool:
        return bool(self.regressions())

    def summary(self) -> str:
        head = (f"history: {len(self.steps)} step(s), {len(self.regressions())} regression(s) "
                f"in {self.series} series over {self.runs} run(s)")  # fmt: skip
        return "\n".join([head, *(f"  {_step_line(s)}" for s in self.steps)])


def noise_sigma(series: np.ndarray) -> float:
    """Robust noise estimate: the MAD of successive differences, scaled to a Gaussian sigma."""
    if series.size < 3:
        return 0.0
    diffs = np.diff(series)
    return float(_MAD_TO_SIGMA * np.median(np.abs(diffs - np.median(diffs))))


def change_points(series: Sequence[float], *, min_size: int = MIN_SIZE, penalty_scale: float = PENALTY_SCALE) -> list[int]:
    """Indices where a new segment starts (empty: no step); every segment has at least `min_size` values."""
    if min_size < 2 or penalty_scale <= 0:  # a median of one value makes every run its own segment
        raise BenchError(f"min_size must be >= 2 and penalty_scale > 0, got {min_size} and {penalty_scale}")
    x = np.asarray(series, dtype=np.float64)
    if x.size < 2 * min_size:
        return []
    # A noiseless series (exact metrics) still needs a penalty > 0, or PELT may split equal values.
    sigma = max(noise_sigma(x), 1e-9 * max(float(np.median(np.abs(x))), 1.0))
    pelt = ruptures.Pelt(model="l1", min_size=min_size, jump=1).fit(x)
    return [int(b) for b in pelt.predict(pen=penalty_scale * sigma * math.log(x.size))[:-1]]


def history(
    df: pd.DataFrame,
    thresholds: Sequence[Threshold] = (),
    *,
    min_size: int = MIN_SIZE,
    penalty_scale: float = PENALTY_SCALE,
) -> History:
    """Steps of every metric of every trial (history key) over the runs in `df`, oldest run first."""
    missing = {"run_id", "started_at", "history_key", "status"} - set(df.columns)
    if missing:
        raise BenchError(f"history: results lack column(s) {', '.join(sorted(missing))}")
    ok = df[df["status"] == Status.OK]
    order = run_order(df)
    steps: list[Step] = []
    series = 0
    for _, rows in ok.groupby("history_key", sort=True):
        trial = TrialRef.of(rows.iloc[0])
        runs = [(run_id, rows[rows["run_id"] == run_id]) for run_id in order if (rows["run_id"] == run_id).any()]
        for metric in METRICS:
            found = _series_steps(trial, metric, runs, threshold_for(metric, thresholds), min_size, penalty_scale)
            series += int(found is not None)
            steps += found or []
    return History(tuple(steps), series, len(order))


def run_order(df: pd.DataFrame) -> list[str]:
    """Run ids by their first trial's start time (the order of commits as they were benchmarked)."""
    starts = df.groupby("run_id")["started_at"].min().sort_values(kind="stable")
    return [str(r) for r in starts.index]


def _series_steps(
    trial: TrialRef,
    metric: Metric,
    runs: list[tuple[str, pd.DataFrame]],
    rel: float,
    min_size: int,
    penalty_scale: float,
) -> list[Step] | None:
    """The steps of one metric's per-run medians; None when the metric was measured in no run."""
    points = run_points(metric, runs)
    if not points:
        return None
    x = np.array([p[2] for p in points])
    cuts = change_points(x, min_size=min_size, penalty_scale=penalty_scale)
    bounds = [0, *cuts, x.size]
    steps = []
    for i, cut in enumerate(cuts):
        before, after = float(np.median(x[bounds[i] : cut])), float(np.median(x[cut : bounds[i + 2]]))
        change = after / before - 1.0 if before else None
        regression = after > before and (change is None or abs(change) > rel)
        run_id, sha, _ = points[cut]
        steps.append(Step(trial, metric.name, cut, run_id, sha, before, after, change,
                          "up" if after > before else "down", rel, regression, metric.unit))  # fmt: skip
    return steps


def run_points(metric: Metric, runs: list[tuple[str, pd.DataFrame]]) -> list[tuple[str, str | None, float]]:
    """(run id, git sha, median of the metric's values) for every run that measured the metric, in the given order."""
    return [(run_id, _sha(rows), float(np.median(v))) for run_id, rows in runs if (v := values(metric, rows)).size]


def _sha(rows: pd.DataFrame) -> str | None:
    shas = [s for s in rows.get("git_sha", pd.Series(dtype=object)) if isinstance(s, str)]
    return shas[0] if shas else None


def _step_line(s: Step) -> str:
    flag = "REGRESSION" if s.regression else "step"
    return (f"{flag:<10} {s.trial.label}  {s.metric} {s.direction} at {s.git_sha or '(no sha)'} (run {s.run_id}, "
            f"#{s.index}): {fmt_value(s.before)} -> {fmt_value(s.after)} {s.unit}{fmt_change(s.rel_change)}")  # fmt: skip

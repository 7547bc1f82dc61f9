"""Compare a candidate run with a base run: a verdict per (trial, metric), asv style for noisy metrics.

Rows are matched by `history_key`. Exact metrics (bytes, calls, sizes) give a verdict on any change
past their threshold (0% unless told). Step time is judged over *launches*: every launch of a
trial's ranks gives one step p50 (`latency_p50_s_per_launch`; the rows of a side pool theirs),
and the candidate is worse or better only when the CIs over launches of the two sides do not
overlap and the medians differ by more than the relative threshold. The steps of one launch are
samples of that launch: a test over them judges two launches, not two revisions, so with fewer
than three launches a side there is no verdict ("within noise", saying why). Peak memory, one
value per row, is worse only when the change is both significant (two-sided Mann-Whitney U at
`alpha` over the rows) and larger than the relative threshold on the median.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Literal

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

from bench.compare.metrics import METRICS, Kind, Metric, fmt_change, fmt_value, launch_values, representative, values
from bench.compare.stats import Estimate, launch_verdict, median_ci
from bench.compare.thresholds import Threshold, threshold_for
from bench.compare.trials import FieldDiff, Side, Status, TrialRef, closest, field_diffs, sides
from bench.errors import BenchError

DEFAULT_ALPHA = 0.05


class Verdict(StrEnum):
    BETTER = "better"
    WORSE = "worse"
    WITHIN_NOISE = "within noise"  # exact metrics: unchanged, or changed no more than their threshold
    NEWLY_FAILING = "newly failing"
    FIXED = "fixed"
    NOT_COMPARABLE = "not comparable"


REGRESSIONS = (Verdict.WORSE, Verdict.NEWLY_FAILING)


@dataclass(frozen=True, slots=True)
class Finding:
    """The verdict on one metric (or on `status`) of one trial present on both sides."""

    trial: TrialRef
    metric: str
    verdict: Verdict
    base: float | None = None  # the median (noisy) or the value (exact) on each side
    candidate: float | None = None
    rel_change: float | None = None  # candidate / base - 1; None when base is 0 or absent
    p_value: float | None = None  # Mann-Whitney U; None when the threshold alone (or the launch CIs) decided
    threshold: float | None = None
    unit: str = ""
    note: str = ""
    # Launch-level metrics: each side's CI over launches (None without one) and its launch count.
    base_ci: tuple[float, float] | None = None
    candidate_ci: tuple[float, float] | None = None
    launches: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class Unmatched:
    """A trial on one side only: no row with its history key on the other."""

    side: Literal["base", "candidate"]
    trial: TrialRef
    closest_key: str | None  # the other side's most similar trial (same strategy/model/workload), if any
    diffs: tuple[FieldDiff, ...]  # key fields that differ from it

    @property
    def verdict(self) -> Verdict:
        return Verdict.NOT_COMPARABLE


@dataclass(frozen=True, slots=True)
class Comparison:
    """Every finding of a base/candidate comparison, and the trials that could not be compared."""

    findings: tuple[Finding, ...]
    unmatched: tuple[Unmatched, ...]
    alpha: float

    def regressions(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.verdict in REGRESSIONS)

    def has_regressions(self) -> bool:
        return bool(self.regressions())

    def summary(self) -> str:
        """One text block: the counts, then every regression, improvement and incomparable trial."""
        return "\n".join(_summary_lines(self))


def compare(
    base: pd.DataFrame, candidate: pd.DataFrame, thresholds: Sequence[Threshold] = (), *, alpha: float = DEFAULT_ALPHA
) -> Comparison:
    """Match `candidate`'s rows to `base`'s by history key and judge every metric of every matched trial."""
    if not 0.0 < alpha < 1.0:
        raise BenchError(f"alpha must be in (0, 1), got {alpha}")
    b, c = sides(base, "base"), sides(candidate, "candidate")
    findings = [f for key in b.keys() & c.keys() for f in _judge_trial(b[key], c[key], thresholds, alpha)]
    findings.sort(key=lambda f: (f.trial.label, f.metric))
    unmatched = [*_unmatched("base", b, c), *_unmatched("candidate", c, b)]
    return Comparison(tuple(findings), tuple(unmatched), alpha)


def judge(
    metric: Metric, base: pd.DataFrame, candidate: pd.DataFrame, thresholds: Sequence[Threshold] = (), *, alpha: float = DEFAULT_ALPHA
) -> Finding:
    """The verdict on one metric between any two sets of rows, e.g. a strategy against its baseline in one run.

    The same test as `compare` (CIs over launches plus the relative threshold for step time,
    Mann-Whitney U plus the threshold for peak memory, the threshold alone for an exact metric),
    without matching by history key: the
    caller decides which rows are comparable. The finding is labelled with the candidate's trial.
    """
    b, c = Side(TrialRef.of(base.iloc[0]), base), Side(TrialRef.of(candidate.iloc[0]), candidate)
    return _judge_metric(metric, b, c, threshold_for(metric, thresholds), alpha)


def _judge_trial(base: Side, cand: Side, thresholds: Sequence[Threshold], alpha: float) -> list[Finding]:
    trial = cand.trial
    match base.status, cand.status:
        case Status.OK, Status.OK:
            return [_judge_metric(m, base, cand, threshold_for(m, thresholds), alpha) for m in METRICS]
        case Status.OK, Status.FAILED:
            return [Finding(trial, "status", Verdict.NEWLY_FAILING, note=cand.error)]
        case Status.FAILED, Status.OK:
            return [Finding(trial, "status", Verdict.FIXED, note=f"was: {base.error}")]
        case (Status.FAILED, Status.FAILED) | (Status.SKIPPED, Status.SKIPPED):
            return []  # nothing changed that could be measured
        case b, c:
            note = f"{b} -> {c}: {cand.error or base.error}"
            return [Finding(trial, "status", Verdict.NOT_COMPARABLE, note=note)]


def _judge_metric(metric: Metric, base: Side, cand: Side, rel: float, alpha: float) -> Finding:
    if metric.launches is not None:
        return _judge_launches(metric, cand.trial, launch_values(metric, base.ok_rows), launch_values(metric, cand.ok_rows), rel)
    if metric.kind is Kind.EXACT:
        return _judge_exact(metric, cand.trial, representative(metric, base.ok_rows), representative(metric, cand.ok_rows), rel)
    return _judge_noisy(metric, cand.trial, values(metric, base.ok_rows), values(metric, cand.ok_rows), rel, alpha)


def _judge_exact(metric: Metric, trial: TrialRef, b: float | None, c: float | None, rel: float) -> Finding:
    found = Finding(trial, metric.name, Verdict.WITHIN_NOISE, b, c, _rel_change(b, c), threshold=rel, unit=metric.unit)
    if b is None and c is None:
        return found  # not measured on either side: null == null
    if b is None or c is None:
        return replace(found, verdict=Verdict.NOT_COMPARABLE, note="measured on one side only")
    if abs(c - b) <= rel * abs(b):  # rel 0: any change at all is a verdict
        return found
    return replace(found, verdict=Verdict.WORSE if c > b else Verdict.BETTER)


def _judge_noisy(metric: Metric, trial: TrialRef, b: np.ndarray, c: np.ndarray, rel: float, alpha: float) -> Finding:
    if not b.size and not c.size:
        return Finding(trial, metric.name, Verdict.WITHIN_NOISE, threshold=rel, unit=metric.unit, note="not measured")
    if not b.size or not c.size:
        return Finding(trial, metric.name, Verdict.NOT_COMPARABLE, threshold=rel, unit=metric.unit, note="measured on one side only")
    mb, mc = float(np.median(b)), float(np.median(c))
    change = _rel_change(mb, mc)
    p = _p_value(metric, b, c, alpha)
    found = Finding(trial, metric.name, Verdict.WITHIN_NOISE, mb, mc, change, p, rel, metric.unit)
    if (p is not None and p >= alpha) or change is None or abs(change) <= rel:
        return found
    return replace(found, verdict=Verdict.WORSE if change > 0 else Verdict.BETTER)


def _judge_launches(metric: Metric, trial: TrialRef, b: np.ndarray, c: np.ndarray, rel: float) -> Finding:
    """Over launches: worse/better only when the CIs separate and the change passes `rel`."""
    if not b.size and not c.size:
        return Finding(trial, metric.name, Verdict.WITHIN_NOISE, threshold=rel, unit=metric.unit, note="not measured")
    if not b.size or not c.size:
        return Finding(trial, metric.name, Verdict.NOT_COMPARABLE, threshold=rel, unit=metric.unit, note="measured on one side only")
    eb, ec = median_ci(list(b)), median_ci(list(c))
    verdict, why = launch_verdict(eb, ec, rel)
    if eb.low is None or ec.low is None:
        why = f"{b.size} vs {c.size} launch(es): no launch-level CI (a launch-level CI needs 3 a side)"
    return Finding(trial, metric.name, Verdict(verdict), eb.value, ec.value, _rel_change(eb.value, ec.value), None, rel,
                   metric.unit, why, _interval(eb), _interval(ec), (int(b.size), int(c.size)))  # fmt: skip


def _interval(e: Estimate) -> tuple[float, float] | None:
    return None if e.low is None or e.high is None else (e.low, e.high)


def _p_value(metric: Metric, b: np.ndarray, c: np.ndarray, alpha: float) -> float | None:
    """Two-sided Mann-Whitney U; None for a one-value-per-run metric with too few runs to ever reach `alpha`.

    The smallest two-sided p-value of the exact test is 2 / C(n1 + n2, n1): with one peak-memory
    value a side (1.0), or three (0.1), it can never reject at 0.05, so the threshold on the median
    decides alone. Latency always has its test: too few step samples to be significant means
    no verdict, however large the change.
    """
    if metric.kind is Kind.SCALAR and 2.0 / math.comb(b.size + c.size, b.size) >= alpha:
        return None
    p = float(mannwhitneyu(b, c, alternative="two-sided").pvalue)
    return 1.0 if math.isnan(p) else p  # NaN: every value tied


def _rel_change(b: float | None, c: float | None) -> float | None:
    if b is None or c is None:
        return None
    if b == 0:
        return 0.0 if c == 0 else None
    return c / b - 1.0


def _unmatched(side: Literal["base", "candidate"], mine: dict[str, Side], other: dict[str, Side]) -> list[Unmatched]:
    """The trials of `mine` whose key `other` lacks, each diffed against its closest trial there."""
    candidates = [s.rows.iloc[0] for s in other.values()]
    out = []
    for key in mine.keys() - other.keys():
        row = mine[key].rows.iloc[0]
        near = closest(row, candidates)
        diffs: tuple[FieldDiff, ...] = ()
        if near is not None:
            diffs = field_diffs(row, near) if side == "base" else field_diffs(near, row)
        out.append(Unmatched(side, mine[key].trial, None if near is None else str(near["history_key"]), diffs))
    return sorted(out, key=lambda u: u.trial.label)


def _summary_lines(cmp: Comparison) -> list[str]:
    counts = {v: sum(f.verdict is v for f in cmp.findings) for v in Verdict}
    trials = len({f.trial.history_key for f in cmp.findings})
    tally = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    head = (f"compare: {len(cmp.regressions())} regression(s) in {trials} matched trial(s) "
            f"({tally or 'no checks'}); {len(cmp.unmatched)} trial(s) on one side only")  # fmt: skip
    lines = [head]
    sections = [
        ("regressions", cmp.regressions()),
        ("improvements", tuple(f for f in cmp.findings if f.verdict in (Verdict.BETTER, Verdict.FIXED))),
        ("not comparable", tuple(f for f in cmp.findings if f.verdict is Verdict.NOT_COMPARABLE)),
    ]
    for title, found in sections:
        if found:
            lines += [f"{title}:", *(f"  {finding_line(f)}" for f in found)]
    if cmp.unmatched:
        lines += ["on one side only (not comparable):", *(f"  {_unmatched_line(u)}" for u in cmp.unmatched)]
    return lines


def finding_line(f: Finding) -> str:
    """One finding as the summary prints it: verdict, trial, metric, base -> candidate, change, p-value, threshold."""
    head = f"{f.verdict:<14} {f.trial.label}  {f.metric}"
    if f.metric == "status":
        return f"{head}: {f.note}" if f.note else head
    stats = [] if f.p_value is None else [f"p={f.p_value:.2g}"]
    if f.launches is not None:
        stats.append(f"launches {f.launches[0]} vs {f.launches[1]}")
    stats += [] if f.threshold is None else [f"threshold {f.threshold * 100:.4g}%"]
    note = [f.note] if f.note else []
    base, cand = fmt_value(f.base) + _fmt_ci(f.base_ci), fmt_value(f.candidate) + _fmt_ci(f.candidate_ci)
    return f"{head}  {base} -> {cand} {f.unit}{fmt_change(f.rel_change)}  [{'; '.join(stats + note)}]"


def _fmt_ci(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f" [{fmt_value(ci[0])}, {fmt_value(ci[1])}]"


def _unmatched_line(u: Unmatched) -> str:
    head = f"{u.side + ' only':<15} {u.trial.label}"
    if u.closest_key is None:
        other = "candidate" if u.side == "base" else "base"
        return f"{head}: no {other} trial with the same strategy/model/workload"
    if not u.diffs:
        return f"{head}: same config and context as {u.closest_key}, yet another history key"
    return f"{head}: differs from {u.closest_key} in " + ", ".join(f"{d.field} {d.base!r} -> {d.candidate!r}" for d in u.diffs)

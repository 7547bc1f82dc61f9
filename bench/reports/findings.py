"""The report's headline: per model x workload, each strategy against the baseline of its own case and run.

Bytes, latency and peak memory are ratios to the baseline; accuracy is a difference. The verdict
is `bench.compare`'s test on the raw step-time samples (two-sided Mann-Whitney U plus a relative
threshold on the median), so "better" and "worse" mean what they mean to the regression checker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.compare.metrics import metric
from bench.compare.regression import DEFAULT_ALPHA, judge
from bench.compare.thresholds import Threshold
from bench.reports import cases, fmt
from bench.reports.cases import BASELINE, Quantity

LATENCY = metric("latency_p50")


@dataclass(frozen=True, slots=True)
class Change:
    """One quantity of a strategy next to its baseline's."""

    value: float | None
    base: float | None

    @property
    def ratio(self) -> float | None:
        if self.value is None or self.base is None or self.base == 0:
            return None
        return self.value / self.base

    @property
    def delta(self) -> float | None:
        return None if self.value is None or self.base is None else self.value - self.base


@dataclass(frozen=True, slots=True)
class StrategyFinding:
    """One strategy in one case and run, against that case's baseline in the same run."""

    strategy: str
    variant: str  # the case fields that vary within its table, e.g. "ws=2"
    run_id: str
    status: str
    bytes: Change
    latency: Change  # p50 of the raw samples
    memory: Change
    accuracy: Change
    verdict: str  # a bench.compare Verdict on latency, or the trial's status when it did not run
    p_value: float | None
    note: str  # why a comparison is missing


@dataclass(frozen=True, slots=True)
class FindingsTable:
    """Every non-baseline strategy of one model x workload, ranked within each case by latency vs base."""

    model: str
    workload: str
    bytes: Quantity | None
    memory: Quantity | None
    accuracy: Quantity | None
    rows: tuple[StrategyFinding, ...]
    runs: tuple[str, ...]


def findings(
    data: cases.ReportData, thresholds: Sequence[Threshold] = (), *, alpha: float = DEFAULT_ALPHA
) -> tuple[list[FindingsTable], list[str]]:
    """The findings tables of the latest row of every trial, and one line per group with only baselines."""
    if data.current.empty:
        return [], []
    ok_baselines = data.ok_baselines()
    tables, baseline_only = [], []
    for (model, workload), group in data.current.groupby(["model", "workload"], sort=True, dropna=False):
        others = group[group["strategy"] != BASELINE]
        if others.empty:
            baseline_only.append(_baseline_only_line(str(model), str(workload), group))
            continue
        bases = ok_baselines[ok_baselines["pair_key"].isin(others["pair_key"])]
        tables.append(_table(str(model), str(workload), others, bases, data.labels, thresholds, alpha))
    return tables, baseline_only


def _table(
    model: str,
    workload: str,
    rows: pd.DataFrame,
    bases: pd.DataFrame,
    labels: dict[Any, str],
    thresholds: Sequence[Threshold],
    alpha: float,
) -> FindingsTable:
    ok = pd.concat([rows[rows["status"] == "ok"], bases])
    quantities = cases.bytes_quantity(ok), cases.memory_quantity(ok), cases.first_measured(ok, cases.ACCURACY)
    found = [
        _finding(r, bases[bases["pair_key"] == r["pair_key"]], labels.get(idx, ""), quantities, thresholds, alpha)
        for idx, r in rows.iterrows()
    ]
    found.sort(key=lambda f: (f.variant, f.run_id, _rank(f)))
    runs = tuple(sorted({f.run_id for f in found}))
    return FindingsTable(model, workload, *quantities, tuple(found), runs)


def _finding(
    row: pd.Series,
    base: pd.DataFrame,
    variant: str,
    quantities: tuple[Quantity | None, Quantity | None, Quantity | None],
    thresholds: Sequence[Threshold],
    alpha: float,
) -> StrategyFinding:
    b = base.iloc[-1] if not base.empty else None
    nbytes, memory, accuracy = (_change(row, b, q) for q in quantities)
    latency = _change(row, b, Quantity("latency_p50_s", "p50", "s"))
    verdict, p, note = str(row["status"]), None, ""
    if row["status"] != "ok":
        note = fmt.last_line(row.get("error"))
    elif b is None:
        verdict, note = "no baseline", f"no ok baseline row of this case in run {row['run_id']}"
    else:
        judged = judge(LATENCY, base.tail(1), row.to_frame().T, thresholds, alpha=alpha)
        verdict, p, note = str(judged.verdict), judged.p_value, judged.note
    if row.get("oversubscribed") is True:
        note = "; ".join(n for n in (note, OVERSUBSCRIBED) if n)
    return StrategyFinding(
        strategy=str(row["strategy"]), variant=variant, run_id=str(row["run_id"]),
        status=str(row["status"]), bytes=nbytes, latency=latency, memory=memory, accuracy=accuracy,
        verdict=verdict, p_value=p, note=note,
    )  # fmt: skip


OVERSUBSCRIBED = "oversubscribed (ranks x threads > cores): its latency measures the OS scheduler too; bytes and memory hold"


def _change(row: pd.Series, base: pd.Series | None, q: Quantity | None) -> Change:
    if q is None or row.get("status") != "ok":
        return Change(None, None)
    return Change(_float(row.get(q.column)), None if base is None else _float(base.get(q.column)))


def _rank(f: StrategyFinding) -> tuple[int, float]:
    """Measured strategies first, fastest first; then those without a baseline; then failed and skipped."""
    if f.status != "ok":
        return (2, 0.0)
    ratio = f.latency.ratio
    return (1, 0.0) if ratio is None else (0, ratio)


def _baseline_only_line(model: str, workload: str, group: pd.DataFrame) -> str:
    fields = cases.varying_fields(r for _, r in group.iterrows())
    what = f"; they differ in {', '.join(fields)}" if fields else ""
    return f"{model} × {workload}: {len(group)} baseline row(s) and no other strategy{what} (see the tables below)"


def _float(value: object) -> float | None:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if v != v else v  # NaN

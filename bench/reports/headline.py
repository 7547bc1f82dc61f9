"""The report's findings: per model x workload, each strategy against the baseline of its own case and run.

Bytes, latency and peak memory are ratios to the baseline; accuracy is a difference. The latency
ratio is, where both trials ran several launches in the same rounds of one sweep, the median of
the per-round ratios (strategy p50 / baseline p50 of the same round) with its CI: a ratio taken
within one round is what stays stable on a shared machine. The verdict is `bench.compare`'s test
over launches (the CIs over launches separate and the change passes the relative threshold), so
"better" and "worse" mean what they mean to the regression checker.
`findings` computes the tables; `section` renders them as the report's "Findings" section.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.compare.metrics import metric
from bench.compare.regression import DEFAULT_ALPHA, Verdict, judge
from bench.compare.stats import Estimate, median_ci, paired_ratios
from bench.compare.thresholds import Threshold, threshold_for
from bench.reports import cases, fmt
from bench.reports.blocks import Cell, Column, Heading, Items, Paragraph, Section, Table
from bench.reports.cases import BASELINE, Quantity, ReportData
from bench.storage.parquet import launches_by_round

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
    # The latency ratio as the median of per-round ratios, with its CI; None when the two were not
    # measured in shared rounds (then `latency.ratio` is the ratio of the two medians).
    round_ratio: Estimate | None = None


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
    round_ratio = None
    if row["status"] != "ok":
        note = fmt.last_line(row.get("error"))
    elif b is None:
        verdict, note = "no baseline", f"no ok baseline row of this case in run {row['run_id']}"
    else:
        judged = judge(LATENCY, base.tail(1), row.to_frame().T, thresholds, alpha=alpha)
        verdict, p, note = str(judged.verdict), judged.p_value, judged.note
        round_ratio = per_round_ratio(row, b)
    if row.get("oversubscribed") is True:
        note = "; ".join(n for n in (note, OVERSUBSCRIBED) if n)
    return StrategyFinding(
        strategy=str(row["strategy"]), variant=variant, run_id=str(row["run_id"]),
        status=str(row["status"]), bytes=nbytes, latency=latency, memory=memory, accuracy=accuracy,
        verdict=verdict, p_value=p, note=note, round_ratio=round_ratio,
    )  # fmt: skip


def per_round_ratio(row: pd.Series | dict[str, Any], base: pd.Series | dict[str, Any]) -> Estimate | None:
    """Median of strategy p50 / baseline p50 over the rounds both ran in (same run), with its CI."""
    if row.get("run_id") != base.get("run_id"):
        return None
    ratios = paired_ratios(launches_by_round(row), launches_by_round(base))
    return median_ci(ratios) if ratios else None


OVERSUBSCRIBED = "oversubscribed (ranks x threads > cores): its latency measures the OS scheduler too; bytes and memory hold"


def _change(row: pd.Series, base: pd.Series | None, q: Quantity | None) -> Change:
    if q is None or row.get("status") != "ok":
        return Change(None, None)
    return Change(_float(row.get(q.column)), None if base is None else _float(base.get(q.column)))


def _rank(f: StrategyFinding) -> tuple[int, float]:
    """Measured strategies first, fastest first; then those without a baseline; then failed and skipped."""
    if f.status != "ok":
        return (2, 0.0)
    ratio = f.round_ratio.value if f.round_ratio is not None else f.latency.ratio
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


_VERDICT_CLASS = {Verdict.BETTER: "better", Verdict.WORSE: "worse", Verdict.WITHIN_NOISE: "noise"}


def section(data: ReportData, thresholds: Sequence[Threshold], alpha: float) -> Section:
    tables, baseline_only = findings(data, thresholds, alpha=alpha)
    blocks: list[Heading | Table | Paragraph | Items] = []
    for t in tables:
        blocks += [Heading(f"{t.model} × {t.workload}"), _render(t)]
    if baseline_only:
        blocks.append(Items(tuple(baseline_only)))
    if not blocks:
        blocks.append(Paragraph("No trial ran: nothing to compare."))
    return Section("findings", "Findings", tuple(blocks), intro=_intro(threshold_for(LATENCY, thresholds), alpha))


def _intro(threshold: float, alpha: float) -> str:
    rule = f"and the median moves by more than {threshold * 100:.3g}%"
    return (
        "Each strategy against the baseline row of the same case (every config field but the strategy: "
        "options, lr, data, seed, sizes, world size) in the same run; rows of different runs are never paired. "
        "Ratios below 1× mean fewer bytes, less time or less memory than the baseline; the latency ratio of "
        "trials launched several times in the same rounds is the median of the per-round ratios, with its CI "
        "in brackets. The verdict is over launches (each launch of a trial's ranks gives one step p50): better or "
        f"worse only when the two trials' CIs over launches do not overlap {rule}; otherwise within noise, and "
        "always within noise with fewer than 3 launches a side (the steps of one launch judge that launch, "
        "not the strategy). Ranked within each case, fastest first. "
        "Each trial's latest run is shown; older runs appear in the history view."
    )


def _render(t: FindingsTable) -> Table:
    show_variant = any(f.variant for f in t.rows)
    show_run = len(t.runs) > 1
    show_note = any(f.note for f in t.rows)
    columns = [Column("strategy", left=True)]
    columns += [Column("case", "the config fields that differ between the rows of this table", left=True)] if show_variant else []
    columns += [Column("run", left=True)] if show_run else []
    cells_of = []
    if t.bytes:
        columns.append(Column(f"{t.bytes.label} vs base", "this strategy's value / the baseline's, same case and run"))
        cells_of.append(lambda f: _ratio_cell(f.bytes, fmt.mb, "MB"))
    columns += [
        Column("latency vs base", "median of the per-round ratios of step p50 [CI], or the ratio of the two p50s"),
        Column("verdict", "the CIs over launches separate and the change passes the relative threshold"),
    ]
    cells_of += [_latency_cell, _verdict_cell]
    if t.memory:
        columns.append(Column(f"{t.memory.label} vs base"))
        cells_of.append(lambda f: _ratio_cell(f.memory, fmt.mb, "MB"))
    if t.accuracy:
        columns.append(Column(f"Δ {t.accuracy.label}", _accuracy_title(t.accuracy)))
        cells_of.append(lambda f: _delta_cell(f.accuracy))
    rows = []
    for f in t.rows:
        ident = [Cell(f.strategy, left=True)]
        ident += [Cell(f.variant, left=True, cls="wrap")] if show_variant else []
        ident += [Cell(f.run_id, left=True)] if show_run else []
        note = [Cell(f.note, left=True, cls="wrap")] if show_note else []
        rows.append(tuple(ident + [c(f) for c in cells_of] + note))
    if show_note:
        columns.append(Column("note", left=True))
    return Table(tuple(columns), tuple(rows), row_classes=tuple(f.status for f in t.rows))


def _ratio_cell(change: Change, show: Callable[[Any], str], unit: str) -> Cell:
    small = "" if change.value is None else f"{show(change.value)} {unit} (base {show(change.base)})"
    return Cell(fmt.ratio(change.ratio), sort=change.ratio, small=small)


def _latency_cell(f: StrategyFinding) -> Cell:
    small = "" if f.latency.value is None else f"{fmt.ms(f.latency.value)} ms (base {fmt.ms(f.latency.base)})"
    rr = f.round_ratio
    if rr is None:
        return Cell(fmt.ratio(f.latency.ratio), sort=f.latency.ratio, small=small)
    ci = fmt.ci(rr.low, rr.high, fmt.ratio) if rr.low is not None else f"no CI: {rr.reason}"
    return Cell(fmt.ratio(rr.value), sort=rr.value, small=f"{ci}, {rr.n} rounds; {small}")


def _verdict_cell(f: StrategyFinding) -> Cell:
    cls = _VERDICT_CLASS.get(Verdict(f.verdict), "") if f.verdict in set(Verdict) else f.status
    return Cell(f.verdict, left=True, cls=cls, small=fmt.p_value(f.p_value) if f.p_value is not None else "")


def _delta_cell(change: Change) -> Cell:
    small = "" if change.value is None else f"{fmt.num(change.value)} (base {fmt.num(change.base)})"
    return Cell(fmt.delta(change.delta), sort=change.delta, small=small)


def _accuracy_title(q: Quantity) -> str:
    better = "higher" if q.higher_is_better else "lower"
    return f"this strategy's {q.label} minus the baseline's ({q.unit}; {better} is better)"

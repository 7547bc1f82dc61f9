"""The findings section: one ranked table per model x workload, each strategy against its own baseline."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bench.compare.regression import Verdict
from bench.compare.thresholds import Threshold, threshold_for
from bench.reports import fmt
from bench.reports.blocks import Cell, Column, Heading, Items, Paragraph, Section, Table
from bench.reports.cases import Quantity, ReportData
from bench.reports.findings import LATENCY, Change, FindingsTable, StrategyFinding, findings

_VERDICT_CLASS = {Verdict.BETTER: "better", Verdict.WORSE: "worse", Verdict.WITHIN_NOISE: "noise"}


def section(data: ReportData, thresholds: Sequence[Threshold], alpha: float) -> Section:
    tables, baseline_only = findings(data, thresholds, alpha=alpha)
    blocks: list[Heading | Table | Paragraph | Items] = []
    for t in tables:
        blocks += [Heading(f"{t.model} × {t.workload}"), _table(t)]
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
        "Ratios below 1× mean fewer bytes, less time or less memory than the baseline. The verdict is on the "
        f"raw step times: better or worse only when a two-sided Mann-Whitney U test rejects at α={alpha:g} "
        f"{rule}; otherwise within noise. Ranked within each case, fastest first. "
        "Each trial's latest run is shown; older runs appear in the history view."
    )


def _table(t: FindingsTable) -> Table:
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
        Column("latency vs base", "p50 of the raw step times / the baseline's"),
        Column("verdict", "Mann-Whitney U on the raw step times, plus the relative threshold on the median"),
    ]
    cells_of += [lambda f: _ratio_cell(f.latency, fmt.ms, "ms"), _verdict_cell]
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


def _verdict_cell(f: StrategyFinding) -> Cell:
    cls = _VERDICT_CLASS.get(Verdict(f.verdict), "") if f.verdict in set(Verdict) else f.status
    return Cell(f.verdict, left=True, cls=cls, small=fmt.p_value(f.p_value) if f.p_value is not None else "")


def _delta_cell(change: Change) -> Cell:
    small = "" if change.value is None else f"{fmt.num(change.value)} (base {fmt.num(change.base)})"
    return Cell(fmt.delta(change.delta), sort=change.delta, small=small)


def _accuracy_title(q: Quantity) -> str:
    better = "higher" if q.higher_is_better else "lower"
    return f"this strategy's {q.label} minus the baseline's ({q.unit}; {better} is better)"

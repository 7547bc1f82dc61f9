"""The network section's calibrated model: measured steps beside the calibrated prediction, the held-out error, the break-even.

Built from `bench.predict` (the alpha-beta step model calibrated on the `collectives` rows of
each link, validated by leaving each link out). Absent when the rows hold no calibration.
"""

from __future__ import annotations

import pandas as pd

from bench.errors import BenchError
from bench.predict import breakeven, holdout
from bench.predict.present import WAY_TEXT, Validation, model_curve, validate_rows
from bench.predict.step import LinkModel
from bench.predict.rows import rates
from bench.reports import fmt, plots
from bench.reports.blocks import Block, Cell, Column, Figure, Heading, Paragraph, Table, present


def _outcomes_table(v: Validation) -> Table:
    columns = (Column("case", left=True), Column("strategy", left=True), Column("held-out link", left=True),
               Column("measured step", "p50, ms"), Column("predicted step", "ms: compute + codec + alpha-beta comm - hidden"),
               Column("compute", "ms, from the other links"), Column("comm", "ms, alpha-beta"),
               Column("hidden", "ms of comm hidden behind compute (profiled overlap)"),
               Column("error", "(predicted - measured) / measured"))  # fmt: skip
    body = tuple(
        (Cell(o.trial.case, left=True), Cell(o.trial.strategy, left=True), Cell(o.trial.link, left=True),
         Cell(fmt.ms(o.trial.measured_s)), Cell(fmt.ms(o.predicted.total_s) + " (predicted)"), Cell(fmt.ms(o.predicted.compute_s)),
         Cell(fmt.ms(o.predicted.comm_s)), Cell(fmt.ms(o.predicted.overlap_s)), Cell(f"{o.error:+.1%}", sort=abs(o.error)))  # fmt: skip
        for o in v.outcomes
    )
    return Table(columns, body, caption="Every trial predicted with its own link held out of the compute fit")


def _breakeven_table(v: Validation) -> Table:
    columns = (Column("case", left=True), Column("strategy", left=True), Column("break-even (measured)", "crossing of the two measured p50 curves"),
               Column("over rounds (measured)", "median of each round's crossing [CI]; the 1.5x check uses it where resolved"),
               Column("break-even (predicted)"),
               Column("interval (predicted)", "from the spread of each strategy's compute over its links"),
               Column("within 1.5x"))  # fmt: skip
    body = tuple(
        (Cell(b.case, left=True), Cell(b.strategy, left=True), Cell(breakeven.rate_text(b.measured_bps) if b.measured_bps else fmt.DASH, title=b.measured_reason or ""),
         Cell(breakeven.round_text(b.rounds) if b.rounds is not None else fmt.DASH, left=True, cls="wrap"),
         Cell(breakeven.rate_text(b.predicted_bps) + " (predicted)" if b.predicted_bps else fmt.DASH, title=b.predicted_reason or ""),
         Cell(f"[{breakeven.rate_text(b.low_bps) if b.low_bps else fmt.DASH}, {breakeven.rate_text(b.high_bps) if b.high_bps else 'unbounded'}]"),
         Cell({None: fmt.DASH, True: "yes", False: "no"}[b.within]))  # fmt: skip
        for b in v.breakevens
    )
    return Table(columns, body, caption="Break-even bandwidth against fp32, measured and predicted")


def _figure(v: Validation, rows: pd.DataFrame) -> Figure | None:
    """One panel per case (a 4-node step is not a 2-node one): each strategy's measured steps and its model's curve."""
    shaped = rates(rows)
    calibrated = {name: m for name, m in v.links.items() if name in shaped}
    panels = [p for case in sorted({o.case for o in v.observed}) if (p := _panel(v, case, calibrated, shaped))] if calibrated else []
    if not panels:
        return None
    return Figure(plots.lines(panels, "link bandwidth (Mbit/s, tc tbf)"), "measured points and the model's curves",
                  "Step time against bandwidth: measured points and the calibrated model (predicted)")  # fmt: skip


def _panel(v: Validation, case: str, calibrated: dict[str, LinkModel], shaped: dict[str, float]) -> plots.LinePanel | None:
    lines = []
    for strat in sorted({o.strategy for o in v.observed if o.case == case}):
        mine = [o for o in v.observed if o.case == case and o.strategy == strat and o.rate_bps and o.link in v.links]
        if not mine:
            continue
        c = holdout.compute_of(mine, v.links, v.way.overlap == "profiled")
        grid = [r for r in breakeven.GRID if min(o.rate_bps for o in mine) / 2 <= r <= max(o.rate_bps for o in mine) * 2]  # type: ignore[type-var]
        curve = model_curve(c, mine[0], calibrated, shaped)
        lines.append(plots.Line(f"{strat} (model)", [r / 1e6 for r in grid], [curve(r) for r in grid], group=strat, dashed=True))
        mine.sort(key=lambda o: o.rate_bps)  # type: ignore[arg-type,return-value]
        lines.append(plots.Line(f"{strat} (measured)", [o.rate_bps / 1e6 for o in mine], [o.measured_s for o in mine], group=strat))  # type: ignore[operator]
    return plots.LinePanel(case, "step p50 (s)", lines, log_y=True, log_x=True) if lines else None


def blocks(rows: pd.DataFrame, comm: pd.DataFrame) -> list[Block]:
    """The model's blocks for the network section; none where the rows hold no calibration on the network trials' links."""
    try:
        v = validate_rows(rows, comm, None)
    except BenchError:
        return []
    if not v.outcomes:
        return []
    summary = Paragraph(f"The calibrated model (bench/predict): each step predicted as compute from the other links "
                        f"({WAY_TEXT[v.way.compute]}) + the alpha-beta time of its collectives, calibrated on the collectives "
                        f"workload on the same link, {WAY_TEXT[v.way.overlap]}. Held-out error, leaving each link out: "
                        f"{v.error_summary()}.")  # fmt: skip
    return list(present(Heading("The calibrated model"), summary, _outcomes_table(v), _breakeven_table(v), _figure(v, rows)))

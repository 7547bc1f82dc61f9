"""The report's advice section: `commbench advise`'s ranked techniques for a cluster, every time marked predicted.

Present when the report is given a cluster (`commbench report RESULTS --advise advise.toml`, or
`commbench advise ... --html OUT`); the accuracy cost and the validated error come from the
report's own rows.
"""

from __future__ import annotations

from bench.predict.present import Advised
from bench.reports.blocks import Cell, Column, Items, Paragraph, Section, Table

SECTION_ID = "advise"
TITLE = "Advice for a cluster (predicted)"


def _ms(s: float) -> str:
    return f"{s * 1e3:,.1f} ms (predicted)"


def _predicted(s: float) -> Cell:
    return Cell(f"{s * 1e3:,.1f} ms", sort=s, small="predicted")


def table(a: Advised) -> Table:
    columns = (Column("#"), Column("technique", left=True), Column("layout", left=True),
               Column("model state", "GB per GPU: parameters, gradients and optimizer state (exact for DDP and FSDP)"),
               Column("fits", "model state within the device memory"),
               Column("compute", "6 x params x tokens / achieved FLOP/s"), Column("comm", "alpha-beta, no overlap"),
               Column("step", "compute + comm"), Column("accuracy cost", "measured in the report's rows", left=True))  # fmt: skip
    body = tuple(
        (Cell(str(i), sort=i), Cell(x.technique.name, left=True, cls="wrap"), Cell(x.technique.layout.name, left=True, cls="wrap"),
         Cell(f"{x.state_bytes / 1e9:.2f} GB", sort=x.state_bytes), Cell("yes" if x.fits else "NO", cls="" if x.fits else "failed"),
         _predicted(x.compute_s), _predicted(x.comm_s), _predicted(x.step_s), Cell(a.accuracy_of(x), left=True, cls="wrap"))  # fmt: skip
        for i, x in enumerate(a.advice, 1)
    )
    return Table(columns, body, caption=a.heading, row_classes=tuple("" if x.fits else "failed" for x in a.advice))


def section(a: Advised) -> Section:
    best = next(x for x in a.advice if x.fits)
    lead = Paragraph(f"Fastest predicted layout that fits: {best.technique.name} ({best.technique.layout.name}), "
                     f"{_ms(best.step_s)} per step. Nothing here was launched: the times are the calibrated model's.")  # fmt: skip
    return Section(SECTION_ID, TITLE, (lead, table(a), Items(tuple(a.notes))))

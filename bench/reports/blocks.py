"""What a report section is made of (tables, figures, text), as typed values the templates render.

The sections decide the content; the jinja2 templates decide the markup. Nothing here knows HTML,
and the templates escape every string they are given.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd

from bench.reports import fmt


@dataclass(frozen=True, slots=True)
class Cell:
    text: str
    sort: float | str | None = None  # the value a sortable table orders by (numbers, not their text)
    left: bool = False
    cls: str = ""  # e.g. "better", "worse", "failed"
    title: str = ""  # shown on hover: the exact value or a reason
    small: str = ""  # a second, quieter line: e.g. the absolute value beside a ratio


@dataclass(frozen=True, slots=True)
class Column:
    head: str
    title: str = ""
    left: bool = False


@dataclass(frozen=True, slots=True)
class Table:
    columns: tuple[Column, ...]
    rows: tuple[tuple[Cell, ...], ...]
    caption: str = ""
    row_classes: tuple[str, ...] = ()
    kind: ClassVar[str] = "table"


@dataclass(frozen=True, slots=True)
class Figure:
    uri: str  # data: URI, never a network address
    alt: str
    caption: str = ""
    kind: ClassVar[str] = "figure"


@dataclass(frozen=True, slots=True)
class Paragraph:
    text: str
    kind: ClassVar[str] = "p"


@dataclass(frozen=True, slots=True)
class Heading:
    text: str
    kind: ClassVar[str] = "h3"


@dataclass(frozen=True, slots=True)
class Items:
    items: tuple[str, ...]
    kind: ClassVar[str] = "ul"


@dataclass(frozen=True, slots=True)
class Details:
    """A collapsed block: a one-line summary and the full text (e.g. a traceback)."""

    summary: str
    body: str
    cls: str = ""
    kind: ClassVar[str] = "details"


Block = Table | Figure | Paragraph | Heading | Items | Details


@dataclass(frozen=True, slots=True)
class Section:
    id: str  # the anchor, and what the browser test looks for
    title: str
    blocks: tuple[Block, ...]
    intro: str = ""


# --- tables from a DataFrame ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spec:
    """One column of a table built from rows: where its value comes from and how it is printed."""

    column: str
    head: str
    show: Callable[[Any], str] = fmt.text
    title: str = ""  # the column's meaning, shown on hover over its header
    left: bool = False
    keep_empty: bool = False  # show the column even when no row has a value

    def cell(self, row: pd.Series) -> Cell:
        value = row.get(self.column)
        # Numbers sort by value (the text may be scaled or a dash); text sorts as shown.
        sort = float(value) if isinstance(value, numbers.Real) and not fmt.missing(value) else None
        return Cell(self.show(value), sort=sort, left=self.left)


def _informative(rows: pd.DataFrame, column: str, drop_zero: bool) -> bool:
    if column not in rows:
        return False
    values = [v for v in rows[column] if not fmt.missing(v)]
    if not values:
        return False
    return not drop_zero or any(not isinstance(v, numbers.Number) or v != 0 for v in values)


def table(
    rows: pd.DataFrame, specs: Sequence[Spec], caption: str = "", row_class: str | None = None, *, drop_zero: bool = False
) -> Table | None:
    """A table of `rows` with the columns of `specs` that hold a value in some row; None when there are no rows.

    `drop_zero` also leaves out a column that is 0 in every row that has a value (e.g. bytes of inference).
    """
    if rows.empty:
        return None
    kept = [s for s in specs if s.keep_empty or _informative(rows, s.column, drop_zero)]
    columns = tuple(Column(s.head, s.title, s.left) for s in kept)
    body = tuple(tuple(s.cell(r) for s in kept) for _, r in rows.iterrows())
    classes = tuple(str(c) for c in rows[row_class]) if row_class else ()
    return Table(columns, body, caption, classes)


def present(*blocks: Block | None) -> tuple[Block, ...]:
    """The blocks that exist (builders return None for what has nothing to show)."""
    return tuple(b for b in blocks if b is not None)


@dataclass(frozen=True, slots=True)
class Omitted:
    """A section left out, and why (listed at the top so an absence is never silent)."""

    title: str
    reason: str


@dataclass(frozen=True, slots=True)
class Page:
    title: str
    generated: str
    headline: str
    sections: tuple[Section, ...]
    omitted: tuple[Omitted, ...] = field(default_factory=tuple)

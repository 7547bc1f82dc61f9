"""Matplotlib figures for the report (Agg backend), each returned as a base64 PNG data URI.

Figures take plain data (the panels below), never a DataFrame: which rows are worth a chart is
decided by the sections, so every figure here draws exactly what it is given. Legends sit outside
the axes, y axes never use an offset, and no label is written onto another.
"""

from __future__ import annotations

import base64
import io
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.axis import Axis  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

COLUMNS = 3  # panels per figure row: 3 x 4.2 in at 110 dpi fits a 1400-px page
PANEL_W = 4.2
BASE_COLOR, OTHER_COLOR, FRONT_COLOR, REGRESSION_COLOR = "#888888", "#3b6ea8", "#c0392b", "#c0392b"


def to_data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _grid(n: int, height: float, width: float = PANEL_W) -> tuple[Figure, list[Axes]]:
    cols = min(COLUMNS, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def minor_log_label(v: float) -> str:
    """A minor log tick's label only at 2, 3 and 5 times a power of ten: every one of them crowds the next decade's
    (0.9 ran into 1 on a 0.25-2.3 s axis)."""
    if v <= 0:
        return ""
    mantissa = round(v / 10 ** math.floor(math.log10(v)), 6)
    return f"{v:g}" if mantissa in (2.0, 3.0, 5.0) else ""


def _plain_y(ax: Axes) -> None:
    """Tick labels as the values themselves: an offset (+1.2345e0) would make 1e-6 look like a difference."""
    if ax.get_yscale() == "linear":
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    else:
        _log_labels(ax.yaxis, *ax.get_ylim())


def _log_labels(axis: Axis, lo: float, hi: float) -> None:
    """A log axis labelled with plain values; one spanning under 1.5 decades also at 2, 3 and 5 times a power of ten
    (matplotlib's own minor labels on a short axis, 3x10^1 at every tick, ran into each other)."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    short = 0 < lo < hi and math.log10(hi / lo) < 1.5
    axis.set_minor_formatter(FuncFormatter(lambda v, _: minor_log_label(v)) if short else NullFormatter())


def _title(ax: Axes, text: str) -> None:
    """A panel title wrapped to the panel's width, so neighbouring titles never run into each other."""
    ax.set_title(textwrap.fill(text, 48), fontsize=8)


def wants_log(values: Sequence[float]) -> bool:
    """A log axis only for positive values that span more than a factor of 20."""
    positive = [v for v in values if v > 0]
    return len(positive) == len(values) > 0 and max(positive) / min(positive) > 20


# --- bars against the baseline ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BarPanel:
    """One case of one run: a bar per strategy, the baseline first."""

    title: str
    labels: Sequence[str]
    values: Sequence[float]
    whiskers: Sequence[tuple[float, float] | None] = ()  # (low, high) per bar, e.g. (p90, p99)
    base_index: int | None = 0


def bars(panels: Sequence[BarPanel], xlabel: str) -> str:
    """Horizontal bars, one panel per case; the baseline grey with a dashed line through its value."""
    tallest = max(len(p.labels) for p in panels)
    fig, axes = _grid(len(panels), 0.9 + 0.32 * tallest, width=PANEL_W + 0.6)
    for ax, p in zip(axes, panels):
        y = list(range(len(p.labels)))
        colors = [BASE_COLOR if i == p.base_index else OTHER_COLOR for i in y]
        ax.barh(y, p.values, color=colors, height=0.6)
        for i, w in enumerate(p.whiskers):
            if w is not None:
                ax.plot([w[0], w[1]], [i, i], color="black", lw=1.2)
                ax.plot([w[1], w[1]], [i - 0.15, i + 0.15], color="black", lw=1.2)
        if p.base_index is not None:
            ax.axvline(p.values[p.base_index], color=BASE_COLOR, ls="--", lw=1)
        ax.set_yticks(y, [str(s) for s in p.labels], fontsize=8)
        ax.invert_yaxis()
        _title(ax, p.title)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlim(left=0)
    fig.tight_layout()
    return to_data_uri(fig)


# --- accuracy against bytes -----------------------------------------------------------------


def pareto_front(points: Sequence[tuple[float, float]], tol: float = 0.0) -> list[int]:
    """Indices of the points nothing beats, sorted by x (lower is better on both axes).

    A point is beaten by another with no more x and a y lower by more than `tol`, or with less x
    and a y no more than `tol` higher: y differences within `tol` (the noise) are ties, and a tie
    goes to the point with fewer bytes.
    """

    def beats(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return (a[0] <= b[0] and a[1] < b[1] - tol) or (a[0] < b[0] and a[1] <= b[1] + tol)

    front = [i for i, p in enumerate(points) if not any(beats(q, p) for j, q in enumerate(points) if j != i)]
    return sorted(front, key=lambda i: points[i])


@dataclass(frozen=True, slots=True)
class ParetoPanel:
    """One case: every strategy as a point (with its seed CI when there is one) and the noise `tol`."""

    title: str
    labels: Sequence[str]
    x: Sequence[float]
    y: Sequence[float]
    y_err: Sequence[float] = ()  # half-width of each point's 95% CI over seeds; empty with one seed
    tol: float = 0.0
    log_y: bool = False  # drawn on a log axis when the values span more than a factor of 20


def pareto(panels: Sequence[ParetoPanel], xlabel: str, ylabel: str) -> str:
    """Accuracy vs bytes per case; a red line joins the frontier. Points are told apart by the legend."""
    fig, axes = _grid(len(panels), 3.6)
    names = sorted({str(s) for p in panels for s in p.labels})
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    style = {n: (cmap(i % cmap.N), "osD^v<>ph*"[i % 10]) for i, n in enumerate(names)}
    drew_front = False
    for ax, p in zip(axes, panels):
        for label, x, y, err in zip(p.labels, p.x, p.y, list(p.y_err) or [None] * len(p.x)):
            color, marker = style[str(label)]
            ax.errorbar(x, y, yerr=err, fmt=marker, color=color, ms=6, capsize=3)
        front = pareto_front(list(zip(p.x, p.y)), p.tol)
        if len(front) > 1:
            drew_front = True
            ax.plot([p.x[i] for i in front], [p.y[i] for i in front], color=FRONT_COLOR, ls="--", lw=1)
        if p.log_y and wants_log(p.y):
            ax.set_yscale("log")
        else:
            _span_at_least(ax, p.y, 4 * p.tol)
        _plain_y(ax)
        _title(ax, p.title)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], ls="", marker=style[n][1], color=style[n][0], label=n) for n in names]
    if drew_front:
        handles.append(plt.Line2D([], [], color=FRONT_COLOR, ls="--", label="Pareto frontier"))
    fig.tight_layout()
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.98), fontsize=8, frameon=False)
    return to_data_uri(fig)


def _span_at_least(ax: Axes, ys: Sequence[float], span: float) -> None:
    """Widen the y range to `span` around the data: differences inside the noise must look flat."""
    lo, hi = min(ys), max(ys)
    if span > 0 and hi - lo < span:
        mid = (lo + hi) / 2
        ax.set_ylim(mid - span / 2, mid + span / 2)


# --- lines over an axis: scaling with world size, history over commits ------------------------


@dataclass(frozen=True, slots=True)
class Line:
    label: str
    x: Sequence[float]
    y: Sequence[float]
    group: str = ""  # lines of one group share a colour (default: each label its own)
    dashed: bool = False  # a model's curve: dashed, no markers


@dataclass(frozen=True, slots=True)
class LinePanel:
    title: str
    ylabel: str
    lines: Sequence[Line]
    log_y: bool = False
    log_x: bool = False  # e.g. link bandwidth, which the network axis steps by factors
    marks: Sequence[tuple[float, bool]] = field(default_factory=tuple)  # (x, is_regression): vertical lines
    xticks: Sequence[tuple[float, str]] = field(default_factory=tuple)


def lines(panels: Sequence[LinePanel], xlabel: str, legend: bool = True) -> str:
    """Line panels sharing one legend outside them (no legend inside any axes)."""
    fig, axes = _grid(len(panels), 3.2)
    styles = {ln.label: (ln.group or ln.label, ln.dashed) for p in panels for ln in p.lines}
    names = sorted(styles)
    groups = sorted({g for g, _ in styles.values()})
    cmap = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
    color = {g: cmap(i % cmap.N) for i, g in enumerate(groups)}

    def style(label: str) -> dict[str, object]:
        group, dashed = styles[label]
        return {"color": color[group], "ls": "--" if dashed else "-", "marker": None if dashed else "o"}

    for ax, p in zip(axes, panels):
        for ln in p.lines:
            ax.plot(ln.x, ln.y, ms=4, lw=1.3, **style(ln.label))  # type: ignore[arg-type]
        for x, regression in p.marks:
            ax.axvline(x - 0.5, color=REGRESSION_COLOR if regression else BASE_COLOR, ls="--", lw=1.2)
        if p.xticks:
            ax.set_xticks([t[0] for t in p.xticks], [t[1] for t in p.xticks], rotation=60, ha="right", fontsize=7)
        elif not p.log_x and len(xs := {x for ln in p.lines for x in ln.x}) <= 12 and all(float(x).is_integer() for x in xs):
            ax.set_xticks(sorted(xs))  # world sizes: 1, 2, 4 ranks, not 1.2
        if p.log_y:
            ax.set_yscale("log")
        if p.log_x:
            ax.set_xscale("log")
            _log_labels(ax.xaxis, *ax.get_xlim())
        _plain_y(ax)
        _title(ax, p.title)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(p.ylabel, fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    if legend and len(names) > 1:
        handles = [plt.Line2D([], [], label=n, **style(n)) for n in names]  # type: ignore[arg-type]
        fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.98), fontsize=8, frameon=False)
    return to_data_uri(fig)

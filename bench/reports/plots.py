"""Matplotlib figures for reports, rendered with the Agg backend to base64 PNG."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def to_data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def grouped_bars(df: pd.DataFrame, value: str, label: str, scale: float = 1.0) -> str | None:
    """One bar group per (model, world size), one bar per strategy."""
    data = df.dropna(subset=[value])
    if data.empty:
        return None
    data = data.assign(case=data["model"] + " ws=" + data["world_size"].astype(str))
    pivot = data.pivot_table(index="case", columns="strategy", values=value, aggfunc="median") * scale
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(pivot) * max(1, len(pivot.columns)) / 2), 3.6))
    pivot.plot.bar(ax=ax, rot=0, width=0.8)
    ax.set_ylabel(label)
    ax.set_xlabel("")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return to_data_uri(fig)


def loss_curves(df: pd.DataFrame) -> str | None:
    data = df[df["loss_curve"].map(lambda c: c is not None and len(c) > 0)]
    if data.empty:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for _, row in data.iterrows():
        ax.plot(list(row["loss_curve"]), label=f"{row['strategy']} {row['model']} ws={row['world_size']}", lw=1.2)
        if pd.notna(row.get("bayes_loss")):
            ax.axhline(row["bayes_loss"], color="gray", ls=":", lw=0.8)
    ax.set_xlabel("sampled step")
    ax.set_ylabel("train loss (nats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return to_data_uri(fig)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower is better on both)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 <= x and y2 <= y) and (x2 < x or y2 < y) for j, (x2, y2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i])


def pareto_scatter(
    df: pd.DataFrame, x: str, y: str, xlabel: str, ylabel: str, xscale: float = 1.0, log_y: bool = False
) -> str | None:
    """One panel per (model, world size): every strategy as a point, the Pareto frontier as a line.

    `log_y` puts y on a symmetric log scale, linear below the smallest positive value, for
    measures that span decades (a ruined model's perplexity) and may be exactly 0.
    """
    data = df.dropna(subset=[x, y])
    if data.empty:
        return None
    cases = sorted(data.groupby(["model", "world_size"]).groups)
    fig, axes = plt.subplots(1, len(cases), figsize=(5.2 * len(cases), 4.0), squeeze=False)
    for ax, (model, ws) in zip(axes[0], cases):
        sub = data[(data["model"] == model) & (data["world_size"] == ws)]
        pts = [(float(a) * xscale, float(b)) for a, b in zip(sub[x], sub[y])]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=22)
        for (px, py), label in zip(pts, sub["strategy"]):
            ax.annotate(str(label), (px, py), fontsize=7, xytext=(3, 3), textcoords="offset points")
        front = pareto_front(pts)
        ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "r--", lw=1, label="Pareto frontier")
        if log_y:
            ax.set_yscale("symlog", linthresh=min((p[1] for p in pts if p[1] > 0), default=1.0))
        ax.set_title(f"{model} ws={ws}", fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return to_data_uri(fig)

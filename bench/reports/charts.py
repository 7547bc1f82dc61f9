"""The report's charts, each drawn only where it carries information.

- against the baseline: bytes, latency (p50, p90-p99 whiskers) and memory, one panel per case and
  run with at least two bars that differ;
- accuracy against bytes: one panel per case with two or more strategies; accuracy differences
  within the noise (the 95% CI over seeds where a suite ran several, at least ACCURACY_FLOOR of the
  values) are ties, so no frontier is drawn through noise;
- scaling with world size, where a strategy ran at two or more;
- history: per-run medians against commits, with the persistent steps bench.compare finds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from bench.compare.history import History, history, run_order, run_points
from bench.compare.metrics import METRICS
from bench.compare.thresholds import Threshold
from bench.compare.trials import TrialRef
from bench.reports import cases, fmt, plots
from bench.reports.blocks import Figure, Paragraph, Section, Spec, Table, present, table
from bench.reports.cases import BASELINE, Quantity, ReportData

# With one seed the noise of an accuracy cannot be measured: differences under 0.1% of the panel's
# largest value are treated as ties (a resolution floor, not a noise estimate).
ACCURACY_FLOOR = 1e-3
MAX_HISTORY_PANELS = 12


def _title(model: object, workload: object, variant: str, run: str | None = None) -> str:
    parts = [str(model), str(workload), *([variant] if variant else []), *([run] if run else [])]
    return " · ".join(parts)


def _values_differ(values: Sequence[float]) -> bool:
    return len(values) >= 2 and max(values) > min(values) and any(v != 0 for v in values)


# --- against the baseline -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BarSpec:
    """A quantity drawn against the baseline: which column, its label, its scale, optional whiskers."""

    title: str
    xlabel: str
    pick: Callable[[pd.DataFrame], Quantity | None]  # the quantity of one model x workload
    scale: float
    whiskers: tuple[str, str] | None = None


BAR_SPECS = (
    BarSpec("Bytes per step", "MB per step (all ranks)", cases.bytes_quantity, 1e-6),
    BarSpec("Step latency: p50, whiskers p90 to p99", "ms per step", lambda _: Quantity("latency_p50_s", "p50", "s"), 1e3,
            ("latency_p90_s", "latency_p99_s")),  # fmt: skip
    BarSpec("Peak memory", "MB (max over ranks)", cases.memory_quantity, 1e-6),
)


def baseline_groups(data: ReportData) -> list[pd.DataFrame]:
    """Per case and run: its ok baseline row first, then the latest ok rows of the other strategies."""
    current = data.current[(data.current["status"] == "ok") & (data.current["strategy"] != BASELINE)]
    bases = data.ok_baselines().set_index("pair_key")
    groups = []
    for key, rows in current.groupby("pair_key", sort=False):
        if key in bases.index:
            base = bases.loc[[key]].reset_index()
            base.index = [-1]
            groups.append(pd.concat([base, rows]))
    return sorted(groups, key=lambda g: (str(g["model"].iloc[0]), str(g["workload"].iloc[0]), data.labels.get(g.index[-1], "")))


def baseline_section(data: ReportData) -> Section | None:
    groups = baseline_groups(data)
    several_runs = len(data.runs) > 1
    blocks = []
    for spec in BAR_SPECS:
        panels = [p for g in groups if (p := _bar_panel(g, spec, data.labels, several_runs)) is not None]
        if panels:
            blocks.append(Figure(plots.bars(panels, spec.xlabel), spec.title.lower(), spec.title))
    if not blocks:
        return None
    return Section("vs-baseline", "Bytes, latency and memory against the baseline", tuple(blocks),
                   intro="One panel per case and run; the baseline's bar is grey, with a dashed line through its value. "
                         "A quantity is drawn only where it differs between strategies.")  # fmt: skip


def _bar_panel(group: pd.DataFrame, spec: BarSpec, labels: dict[Any, str], several_runs: bool) -> plots.BarPanel | None:
    q = spec.pick(group)
    if q is None:
        return None
    rows = group[pd.to_numeric(group[q.column], errors="coerce").notna()]
    if len(rows) < 2 or rows.iloc[0]["strategy"] != BASELINE:
        return None
    values = [float(v) * spec.scale for v in rows[q.column]]
    if not _values_differ(values):
        return None
    whiskers: list[tuple[float, float] | None] = []
    if spec.whiskers:
        lo, hi = spec.whiskers
        whiskers = [None if fmt.missing(r.get(lo)) or fmt.missing(r.get(hi)) else (float(r[lo]) * spec.scale, float(r[hi]) * spec.scale)
                    for _, r in rows.iterrows()]  # fmt: skip
    first = rows.iloc[1]
    title = _title(first["model"], first["workload"], labels.get(rows.index[1], ""), str(first["run_id"]) if several_runs else None)
    if q.column not in ("latency_p50_s",):
        title += f" ({q.label})"
    return plots.BarPanel(title, list(rows["strategy"]), values, whiskers, base_index=0)


# --- accuracy against bytes -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Axis:
    label: str
    value: Callable[[pd.DataFrame], pd.Series]
    log: bool = False


def _col(name: str, scale: float = 1.0) -> Callable[[pd.DataFrame], pd.Series]:
    return lambda df: pd.to_numeric(df[name], errors="coerce") * scale if name in df else pd.Series(np.nan, index=df.index)


X_AXES = (  # the first one a group measured
    Axis("modelled wire MB per step (all ranks)", _col("modelled_wire_bytes_per_step", 1e-6)),
    Axis("wire MB per step (all ranks)", _col("wire_bytes_per_step", 1e-6)),
    Axis("model MB (each tensor dense or bitmask-sparse)", _col("model_sparse_bytes", 1e-6)),
    Axis("model MB", _col("model_bytes", 1e-6)),
)
Y_AXES = (
    Axis("eval loss (nats)", _col("eval_loss")),
    Axis("perplexity", _col("perplexity"), log=True),
    Axis("KL to the uncompressed model (nats)", _col("kl_mean")),
    Axis("1 − embedding cosine", lambda df: 1 - _col("embedding_cosine")(df), log=True),
)


def _first_axis(df: pd.DataFrame, axes: Sequence[Axis], moved: bool = False) -> Axis | None:
    for a in axes:
        v = a.value(df).dropna()
        if len(v) and (not moved or (v > 0).any()):
            return a
    return None


def accuracy_section(data: ReportData) -> Section | None:
    ok = data.current[data.current["status"] == "ok"]
    blocks: list[Figure | Paragraph] = []
    for (model, workload), group in ok.groupby(["model", "workload"], sort=True):
        x, y = _first_axis(group, X_AXES, moved=True), _first_axis(group, Y_AXES)
        if x is None or y is None:
            continue
        panels = [p for p in _pareto_panels(group, x, y, str(model), str(workload)) if p is not None]
        if panels:
            blocks.append(Figure(plots.pareto(panels, x.label, y.label), f"accuracy vs bytes: {model} {workload}",
                                 f"{model} × {workload}: {y.label} against {x.label}"))  # fmt: skip
    curves = _loss_curves(ok, data.labels)
    if curves is not None:
        blocks.append(curves)
    if not blocks:
        return None
    return Section("accuracy", "Accuracy against bytes", tuple(blocks),
                   intro="Each strategy's accuracy against the bytes it costs; the red line joins the strategies nothing "
                         "beats on both (fewer bytes, lower value). Differences in accuracy inside the noise are ties: "
                         "the 95% CI over seeds where the suite ran several (error bars), and at least "
                         f"{ACCURACY_FLOOR:.1%} of the panel's values (one seed cannot measure its own noise); "
                         "the y axis spans at least four times that noise. A case whose strategies all cost the same "
                         "bytes has no panel.")  # fmt: skip


def _pareto_panels(group: pd.DataFrame, x: Axis, y: Axis, model: str, workload: str) -> list[plots.ParetoPanel | None]:
    keyed = group.assign(_x=x.value(group), _y=y.value(group)).dropna(subset=["_x", "_y"])
    keyed = keyed.assign(_case=[_case_without(r, ("seed",)) for _, r in keyed.iterrows()])
    variants = cases.varying_fields(r for _, r in keyed.iterrows())
    out = []
    for _, rows in keyed.groupby("_case", sort=True):
        per = rows.groupby("strategy", sort=True).agg(x=("_x", "mean"), y=("_y", list))
        if len(per) < 2:
            continue
        means = [float(np.mean(v)) for v in per["y"]]
        errs = [_ci_half_width(v) for v in per["y"]]
        tol = max(ACCURACY_FLOOR * max(abs(m) for m in means), *errs)
        if not _values_differ(list(per["x"])):
            continue  # accuracy against bytes says nothing where the bytes are the same
        label = cases.variant_label(rows.iloc[0], [v for v in variants if v not in ("seed",)])
        out.append(plots.ParetoPanel(_title(model, workload, label), list(per.index), list(per["x"]), means,
                                     errs if any(errs) else [], tol, y.log))  # fmt: skip
    return out


def _case_without(row: pd.Series, fields: tuple[str, ...]) -> str:
    case = cases.case_fields(row)
    return json.dumps({k: v for k, v in case.items() if k not in fields}, sort_keys=True, default=str)


def _ci_half_width(values: Sequence[float]) -> float:
    """Half-width of the 95% t interval of the mean; 0 for a single value."""
    n = len(values)
    if n < 2:
        return 0.0
    return float(stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n))


def _loss_curves(ok: pd.DataFrame, labels: dict[Any, str]) -> Figure | None:
    if "loss_curve" not in ok:
        return None
    has = ok[ok["loss_curve"].map(lambda c: c is not None and not fmt.missing(c) and len(c) > 1).astype(bool)]
    panels = []
    for (model, variant), rows in has.groupby([has["model"], has.index.map(lambda i: labels.get(i, ""))], sort=True):
        curves = [plots.Line(str(r["strategy"]), list(range(len(r["loss_curve"]))), [float(v) for v in r["loss_curve"]])
                  for _, r in rows.iterrows()]  # fmt: skip
        panels.append(plots.LinePanel(_title(model, "train", str(variant)), "train loss (nats)", curves))
    if not panels:
        return None
    return Figure(plots.lines(panels, "sampled step"), "loss curves", "Training loss per sampled step (mean over ranks)")


# --- scaling with world size -----------------------------------------------------------------

SCALING = (
    ("p50 step latency (ms)", lambda df: _col("latency_p50_s", 1e3)(df)),
    ("logical MB per step per rank", lambda df: _col("comm_logical_bytes_per_step", 1e-6)(df) / df["world_size"]),
    ("busbw (MB/s)", _col("busbw_Bps", 1e-6)),
)


def scaling_section(data: ReportData) -> Section | None:
    ok = data.current[data.current["status"] == "ok"]
    blocks = []
    for (model, workload), group in ok.groupby(["model", "workload"], sort=True):
        if group["world_size"].nunique() < 2:
            continue
        fields = [f for f in cases.varying_fields(r for _, r in group.iterrows()) if f != "world_size"]
        names = [f"{r['strategy']} {cases.variant_label(r, fields)}".strip() for _, r in group.iterrows()]
        group = group.assign(_line=names)
        panels = [p for label, value in SCALING if (p := _scaling_panel(group, label, value)) is not None]
        if panels:
            blocks.append(Figure(plots.lines(panels, "world size (ranks)"), f"scaling: {model} {workload}", f"{model} × {workload}"))
    if not blocks:
        return None
    return Section("scaling", "Scaling with world size", tuple(blocks),
                   intro="Each strategy (and case) that ran at two or more world sizes; the latest row of each.")  # fmt: skip


def _scaling_panel(group: pd.DataFrame, label: str, value: Callable[[pd.DataFrame], pd.Series]) -> plots.LinePanel | None:
    v = group.assign(_v=value(group)).dropna(subset=["_v"])
    lines = []
    for name, rows in v.groupby("_line", sort=True):
        rows = rows.sort_values("world_size")
        if rows["world_size"].nunique() >= 2:
            lines.append(plots.Line(str(name), [float(w) for w in rows["world_size"]], [float(y) for y in rows["_v"]]))
    values = [y for ln in lines for y in ln.y]
    if not lines or not _values_differ(values):
        return None
    return plots.LinePanel(label, label, lines, log_y=plots.wants_log(values))


# --- history across runs -----------------------------------------------------------------------


def history_section(data: ReportData, thresholds: Sequence[Threshold]) -> Section | None:
    """Per-run medians against commits for every trial measured in two or more runs, with bench.compare's steps."""
    df = data.rows
    order = run_order(df) if not df.empty else []
    ok = df[df["status"] == "ok"]
    shared = [k for k, rows in ok.groupby("history_key") if rows["run_id"].nunique() >= 2]
    if len(order) < 2 or not shared:
        return None
    found = history(df, thresholds)
    series = ok[ok["history_key"].isin(shared)]
    drawn = [run for run in order if run in set(series["run_id"])]  # the x axis: runs that measured a drawn series
    position = {run: i for i, run in enumerate(drawn)}
    panels, candidates = _history_panels(series, found, position, _run_ticks(df, drawn))
    blocks = present(
        Paragraph(f"{len(order)} runs, {len(shared)} trials measured in two or more; "
                  f"{found.summary().splitlines()[0].removeprefix('history: ')}."),  # fmt: skip
        _steps_table(found),
        Figure(plots.lines(panels, "run (commit)", legend=False), "history", "Per-run median of each series; dashed lines "
               "mark persistent steps (red: a regression)") if panels else None,  # fmt: skip
        Paragraph(f"Drawn: {len(panels)} of {candidates} series (every trial's latency, and every metric with a step), "
                  f"those with steps first, at most {MAX_HISTORY_PANELS}.") if panels else None,  # fmt: skip
    )
    return Section("history", "History across runs", blocks,
                   intro="Runs ordered by start time. Steps are found by change-point detection (PELT on the per-run "
                         "medians, bench.compare.history), so a one-run blip is not a step.")  # fmt: skip


def _run_ticks(df: pd.DataFrame, order: list[str]) -> list[tuple[float, str]]:
    shas = df.groupby("run_id")["git_sha"].first() if "git_sha" in df else pd.Series(dtype=object)
    every = max(1, math.ceil(len(order) / 15))
    return [(float(i), fmt.sha(shas.get(run))[:7] if not fmt.missing(shas.get(run)) else run[-6:])
            for i, run in enumerate(order) if i % every == 0]  # fmt: skip


def _history_panels(
    ok: pd.DataFrame, found: History, position: dict[str, int], ticks: list[tuple[float, str]]
) -> tuple[list[plots.LinePanel], int]:
    """Panels of the series worth drawing (steps first, at most MAX_HISTORY_PANELS), and how many there were."""
    stepped = {(s.trial.history_key, s.metric) for s in found.steps}
    wanted = [(k, m) for k in sorted(ok["history_key"].unique()) for m in METRICS
              if (k, m.name) in stepped or m.name == "latency_p50"]  # fmt: skip
    wanted.sort(key=lambda km: (km[0], km[1].name) not in stepped)
    panels = []
    for key, m in wanted[:MAX_HISTORY_PANELS]:
        rows = ok[ok["history_key"] == key]
        runs = [(run, rows[rows["run_id"] == run]) for run in sorted(rows["run_id"].unique(), key=position.__getitem__)]
        points = run_points(m, runs)
        if len(points) < 2:
            continue
        scale = 1e3 if m.unit == "s" else 1.0
        line = plots.Line(m.name, [float(position[r]) for r, _, _ in points], [v * scale for _, _, v in points])
        marks = [(float(position[s.run_id]), s.regression) for s in found.steps if s.trial.history_key == key and s.metric == m.name]
        unit = "ms" if m.unit == "s" else m.unit
        panels.append(plots.LinePanel(TrialRef.of(rows.iloc[0]).label, f"{m.name} ({unit})", [line], marks=marks, xticks=ticks))
    return panels, len(wanted)


STEPS = (
    Spec("flag", "", left=True, keep_empty=True),
    Spec("trial", "trial", left=True, keep_empty=True),
    Spec("metric", "metric", left=True, keep_empty=True),
    Spec("commit", "from commit", left=True),
    Spec("run", "run", left=True, keep_empty=True),
    Spec("before", "before"),
    Spec("after", "after"),
    Spec("change", "change"),
)


def _steps_table(found: History) -> Table | None:
    if not found.steps:
        return None
    rows = pd.DataFrame([{
        "flag": "REGRESSION" if s.regression else "step", "trial": s.trial.label, "metric": s.metric,
        "commit": fmt.sha(s.git_sha), "run": s.run_id, "before": f"{s.before:.4g} {s.unit}", "after": f"{s.after:.4g} {s.unit}",
        "change": fmt.DASH if s.rel_change is None else f"{s.rel_change * 100:+.1f}%", "cls": "worse" if s.regression else "",
    } for s in found.steps])  # fmt: skip
    return table(rows, STEPS, row_class="cls")


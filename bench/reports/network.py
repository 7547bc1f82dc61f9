"""The network axis: step time against link bandwidth per strategy, and where each one breaks even with fp32.

For each case measured on two or more shaped links (`network` = `1gbit`, `100mbit`, ...):

- the **measured break-even bandwidth** of a strategy is where its step-time curve crosses
  the baseline's, interpolated linearly in log-bandwidth between the two measured links
  around the crossing: below it the strategy's step is faster than fp32's. It is null with
  a reason when the curves do not cross inside the measured range.
- the **model** is `t(bw) = compute + 8·bytes/bw + delay·messages`, with `bytes` the
  link bytes per step in one direction (veth counters, headers included, as tbf counts
  them), `messages` the collectives per step and `compute` fitted as the median residual
  over the shaped links. Its break-even is `8·(bytes_fp32 − bytes_s) / (compute_s − compute_fp32)`;
  the table shows it beside the measured one, and the model's worst relative error.
- the **break-even over rounds** (`round_break_even`): where the trials ran several launches in
  the same rounds of one sweep, each round gives its own crossing, from that round's per-link
  ratios (strategy p50 / baseline p50, interpolated in log-ratio against log-bandwidth); the
  break-even is their median with its CI over rounds. It is **resolved** when every round
  crosses and the CI lies inside the measured link range; otherwise it is reported unresolved,
  saying why. Ratios taken within one round are what stays put on a shared machine.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.config import canonical_json
from bench.predict.breakeven import RoundBreakEven, crossing, over_rounds, rate_text, round_text
from bench.predict.rows import CALIBRATION_WORKLOAD
from bench.reports import cases, detail, fmt, plots, predicted
from bench.reports.blocks import Cell, Column, Figure, Paragraph, Section, Table, present
from bench.storage.parquet import launches_by_round

BASELINE = cases.BASELINE


@dataclass(frozen=True, slots=True)
class Curve:
    """One strategy of one case: step time (p50, s) on each link, and the model fitted to it."""

    strategy: str
    points: tuple[tuple[float, float], ...]  # (rate bit/s, step s) on shaped links, fastest first
    unshaped_s: float | None  # the step on the unshaped veth
    bytes_per_direction: float | None  # link bytes per step one way (mean over the shaped links)
    messages: float | None  # collectives per step
    compute_s: float | None  # the model's fitted compute time
    model_error: float | None  # max |model - measured| / measured over the shaped links
    intervals: tuple[tuple[float | None, str], ...] = ()  # (rate, or None unshaped; the step's CI over launches, as text)


@dataclass(frozen=True, slots=True)
class BreakEven:
    """A strategy against the baseline of its case: measured and modelled break-even bandwidth (bit/s)."""

    curve: Curve
    measured_bps: float | None
    measured_reason: str | None
    model_bps: float | None
    model_reason: str | None
    over_rounds: RoundBreakEven | None = None  # None: no two trials shared a round


@dataclass(frozen=True, slots=True)
class NetworkCase:
    title: str
    baseline: Curve
    rows: tuple[BreakEven, ...]


def _round_points(rows: pd.DataFrame) -> dict[tuple[str, int], dict[float, float]]:
    """(run, round) -> {link rate: that round's step p50} over a strategy's shaped-link rows."""
    out: dict[tuple[str, int], dict[float, float]] = {}
    for _, r in rows.iterrows():
        for rnd, p50 in launches_by_round(r).items():
            out.setdefault((str(r["run_id"]), rnd), {})[float(r["network_rate_bps"])] = p50
    return out


def round_break_even(base_rows: pd.DataFrame, cand_rows: pd.DataFrame) -> RoundBreakEven | None:
    """The break-even of `cand_rows` against `base_rows` (one case, shaped links, any runs) over their
    shared rounds (`breakeven.over_rounds`); None when no round holds both on two or more links."""
    return over_rounds(_round_points(base_rows), _round_points(cand_rows))


def model_break_even(base: Curve, cand: Curve) -> tuple[float | None, str | None]:
    """The simple model's crossing: 8·(bytes_fp32 − bytes) / (compute − compute_fp32)."""
    if None in (base.bytes_per_direction, cand.bytes_per_direction, base.compute_s, cand.compute_s):
        return None, "no link bytes or fit"
    saved = base.bytes_per_direction - cand.bytes_per_direction  # type: ignore[operator]
    extra = cand.compute_s - base.compute_s  # type: ignore[operator]
    if saved <= 0:
        return None, "moves no fewer bytes than fp32"
    if extra <= 0:
        return None, "no slower to compute than fp32: faster at every bandwidth"
    return 8 * saved / extra, None


def _f(v: object) -> float | None:
    return None if fmt.missing(v) else float(v)  # type: ignore[arg-type]


def _curve(strategy: str, rows: pd.DataFrame) -> Curve:
    shaped = rows[rows["network_rate_bps"].notna()].sort_values("network_rate_bps", ascending=False)
    points = tuple((float(r), float(t)) for r, t in zip(shaped["network_rate_bps"], shaped["latency_p50_s"]))
    unshaped = rows[rows["network_rate_bps"].isna()]["latency_p50_s"]
    per_dir = [(_f(r.get("link_bytes_per_step")) or math.nan) / max(int(r.get("nnodes") or 1), 1) for _, r in shaped.iterrows()]
    per_dir = [b for b in per_dir if not math.isnan(b)]
    nbytes = float(np.mean(per_dir)) if per_dir else None
    calls = [v for v in (_f(x) for x in shaped.get("comm_calls_per_step", [])) if v is not None]
    messages = float(np.mean(calls)) if calls else None
    compute = err = None
    if nbytes is not None and points:
        delays = [(_f(d) or 0.0) for d in shaped["network_delay_s"]]
        comm = [8 * nbytes / r + d * (messages or 0.0) for (r, _), d in zip(points, delays)]
        compute = float(np.median([t - c for (_, t), c in zip(points, comm)]))
        err = max(abs(compute + c - t) / t for (_, t), c in zip(points, comm))
    intervals = tuple((_f(r["network_rate_bps"]), _interval(r)) for _, r in rows.iterrows())
    return Curve(strategy, points, float(unshaped.iloc[0]) if len(unshaped) else None, nbytes, messages, compute, err, intervals)


def _interval(row: pd.Series) -> str:
    """The step p50's CI over the launches of its one run; a median over runs has none of its own."""
    runs = int(row.get("runs") or 1)
    return f"median of {runs} runs" if runs > 1 else detail.ci_text(row, "latency_p50_s", fmt.ms) or ""


def _case_key(row: pd.Series) -> str:
    fields = cases.case_fields(row)
    for k in ("network", "network_rate_bps", "network_delay_s"):
        fields.pop(k, None)
    return canonical_json(fields)


_MEDIAN_OVER_RUNS = ("latency_p50_s", "link_bytes_per_step", "comm_calls_per_step")


def _median_over_runs(ok: pd.DataFrame) -> pd.DataFrame:
    """One row per case × strategy × link: the median of its runs (launches on a loaded machine differ)."""
    rows = []
    for _, g in ok.groupby(["_case", "strategy", "network"], sort=True):
        first = g.iloc[0].copy()
        for col in _MEDIAN_OVER_RUNS:
            if col in g:
                first[col] = g[col].median()
        first["runs"] = len(g)
        rows.append(first)
    return pd.DataFrame(rows)


def analyse(rows: pd.DataFrame) -> list[NetworkCase]:
    """Every case with a baseline measured on two or more shaped links, and its strategies against it.

    Each point is the median of a trial's step p50 over every run in `rows` that measured it. The
    `collectives` workload is left out: it is the predictor's calibration, which the calibrated
    model's alpha-beta table shows (as cases it gave one table per op and size, all titled alike).
    """
    if "network" not in rows or rows.empty:
        return []
    ok = rows[(rows["status"] == "ok") & rows["network"].notna() & rows["latency_p50_s"].notna() & (rows["workload"] != CALIBRATION_WORKLOAD)]
    if ok.empty:
        return []
    ok = ok.assign(_case=[_case_key(r) for _, r in ok.iterrows()])
    raw = ok[ok["network_rate_bps"].notna()]
    ok = _median_over_runs(ok)
    out = []
    for case_key, group in ok.groupby("_case", sort=True):
        launches = raw[raw["_case"] == case_key]
        curves = {s: _curve(str(s), rows) for s, rows in group.groupby("strategy", sort=True)}
        base = curves.pop(BASELINE, None)
        if base is None or len(base.points) < 2:
            continue
        rows = []
        for curve in curves.values():
            measured, why = crossing(base.points, curve.points)
            model, model_why = model_break_even(base, curve)
            over = round_break_even(launches[launches["strategy"] == BASELINE], launches[launches["strategy"] == curve.strategy])
            rows.append(BreakEven(curve, measured, why, model, model_why, over))
        first = group.iloc[0]
        lo, hi = int(group["runs"].min()), int(group["runs"].max())
        runs = "one run" if hi == 1 else f"median of {lo} runs" if lo == hi else f"median of {lo}–{hi} runs"
        title = f"{first['model']} × {first['workload']}, {first['world_size']} ranks on {first.get('nnodes')} nodes ({runs})"
        out.append(NetworkCase(title, base, tuple(rows)))
    return out


def _links(case: NetworkCase) -> list[float]:
    return sorted({r for c in (case.baseline, *(b.curve for b in case.rows)) for r, _ in c.points}, reverse=True)


def table(case: NetworkCase, simple_model: bool = True) -> Table:
    """The case's steps per link and break-evens; `simple_model=False` leaves out the simple model's
    columns (where the calibrated model's table follows, one model answers)."""
    links = _links(case)
    columns = (
        Column("strategy", left=True),
        Column("veth (unshaped)", "step p50 (ms) on the veth without a rate limit [its CI over launches]"),
        *(Column(rate_text(r), "step p50 (ms) on this link [its CI over launches]") for r in links),
        Column("link MB/step one way", "veth-counted bytes per step in one direction, headers included"),
        Column("break-even (measured)", "below this bandwidth the strategy's step beats fp32's (log-interpolated)"),
        Column("break-even over rounds [CI]", "median over rounds of each round's crossing of its per-link ratios, with its CI; "
               "resolved when every round crosses and the CI lies inside the measured links"),
    )
    if simple_model:
        columns += (Column("break-even (model)", "8·(bytes_fp32 − bytes) / (compute − compute_fp32)"),
                    Column("model error", "max |model − measured| / measured over the shaped links"))  # fmt: skip
    body = []
    for curve, be in [(case.baseline, None), *((b.curve, b) for b in case.rows)]:
        step, ci = dict(curve.points), dict(curve.intervals)
        cells = [
            Cell(curve.strategy, left=True),
            Cell(f"{fmt.ms(curve.unshaped_s)} {ci.get(None, '')}".strip(), sort=curve.unshaped_s, cls="wrap"),
            *(Cell(f"{fmt.ms(step.get(r))} {ci.get(r, '')}".strip(), sort=step.get(r), cls="wrap") for r in links),
            Cell(fmt.mb(curve.bytes_per_direction)),
            Cell(
                "(fp32)" if be is None else (rate_text(be.measured_bps) if be.measured_bps else fmt.DASH),
                title="" if be is None else (be.measured_reason or ""),
                sort=None if be is None else be.measured_bps,
            ),  # fmt: skip
            Cell("(fp32)" if be is None else round_text(be.over_rounds), left=True, cls="wrap",
                 sort=None if be is None or be.over_rounds is None or be.over_rounds.estimate is None
                 else be.over_rounds.estimate.value),  # fmt: skip
        ]
        if simple_model:
            cells += [
                Cell("(fp32)" if be is None else (rate_text(be.model_bps) if be.model_bps else fmt.DASH),
                     title="" if be is None else (be.model_reason or "")),
                Cell(fmt.pct(curve.model_error) if curve.model_error is not None else fmt.DASH),
            ]  # fmt: skip
        body.append(tuple(cells))
    return Table(columns, tuple(body), caption=case.title)


def figure(case: NetworkCase) -> Figure:
    lines = [plots.Line(c.strategy, [r / 1e6 for r, _ in c.points], [t for _, t in c.points])
             for c in (case.baseline, *(b.curve for b in case.rows)) if c.points]  # fmt: skip
    panel = plots.LinePanel(case.title, "step p50 (s)", lines, log_y=True, log_x=True)
    return Figure(plots.lines([panel], "link bandwidth (Mbit/s, tc tbf)"), f"step time vs bandwidth: {case.title}",
                  "Step time against link bandwidth per strategy (both axes log)")  # fmt: skip


def reasons(case: NetworkCase) -> Paragraph | None:
    notes = [f"{b.curve.strategy}: {b.measured_reason}" for b in case.rows if b.measured_reason]
    return Paragraph("No measured break-even — " + "; ".join(notes) + ".") if notes else None


def section(rows: pd.DataFrame, comm: pd.DataFrame | None = None) -> Section | None:
    found = analyse(rows)
    if not found:
        return None
    calibrated = predicted.blocks(rows, comm) if comm is not None else []  # where rows hold a calibration
    blocks = [blk for case in found for blk in present(table(case, simple_model=not calibrated), reasons(case), figure(case))]
    model = ("the calibrated model below (bench/predict)" if calibrated else
             "the model compute + bytes/bandwidth + delay × messages (a calibration sweep on the same links gives the calibrated one)")
    return Section("network", "Step time against link bandwidth", tuple(blocks + calibrated),
                   intro="Two network namespaces joined by a veth, one node each, the link shaped by tc (bench/network). "
                         "Break-even: the bandwidth below which a strategy's step beats fp32's, interpolated in "
                         f"log-bandwidth between measured links, over rounds with its CI, and predicted by {model}.")  # fmt: skip


def markdown(found: list[NetworkCase]) -> str:
    """The break-even tables as Markdown (for a findings report), step p50 in ms."""
    out = []
    for case in found:
        links = _links(case)
        out.append(f"**{case.title}**\n")
        out.append("Step p50 in ms on each link; bytes counted on the veth.\n")
        out.append("| strategy | veth (unshaped) | " + " | ".join(rate_text(r) for r in links)
                   + " | link MB/step one way | break-even (measured) | break-even over rounds [CI] | break-even (model) | model error |")  # fmt: skip
        out.append("|" + "---|" * (len(links) + 7))
        for curve, be in [(case.baseline, None), *((b.curve, b) for b in case.rows)]:
            step = dict(curve.points)
            measured = "(fp32)" if be is None else (rate_text(be.measured_bps) if be.measured_bps else f"— ({be.measured_reason})")
            model = "(fp32)" if be is None else (rate_text(be.model_bps) if be.model_bps else f"— ({be.model_reason})")
            out.append(f"| {curve.strategy} | {fmt.ms(curve.unshaped_s)} | " + " | ".join(fmt.ms(step.get(r)) for r in links)
                       + f" | {fmt.mb(curve.bytes_per_direction)} | {measured} | "
                       + ("(fp32)" if be is None else round_text(be.over_rounds)) + f" | {model} | "
                       + (fmt.pct(curve.model_error) if curve.model_error is not None else fmt.DASH) + " |")  # fmt: skip
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.reports.network RESULTS... [--png OUT.png]`: the break-even tables as Markdown."""
    from bench.storage.parquet import read_results

    args = list(sys.argv[1:] if argv is None else argv)
    png = None
    if "--png" in args:
        i = args.index("--png")
        png = Path(args[i + 1])
        del args[i : i + 2]
    found = analyse(read_results([Path(a) for a in args]))
    if not found:
        print("no case with a baseline on two or more shaped links", file=sys.stderr)
        return 1
    print(markdown(found))
    if png is not None:
        import base64

        png.write_bytes(base64.b64decode(figure(found[0]).uri.split(",", 1)[1]))
        print(json.dumps({"png": str(png)}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Accuracy over seeds: each case's rows of several seeds as mean ± 95% CI (Student t), with n.

A suite's `seeds` axis repeats a case once per seed (model init, data stream, codec noise).
One seed of a short training run measures which plateau it escaped as much as the strategy,
so the accuracy of a strategy is read here as a mean over its seeds with a confidence
interval, and against the baseline as the mean of the per-seed differences (strategy minus
the latest ok baseline of the same case and seed): seeds pair the two, so the paired interval
is the one that says whether a strategy changes the loss. Unlike latency, a loss does not
depend on what else ran on the machine, so this pairing may cross runs.

    python -m bench.reports.seeds RESULTS... [--column eval_loss]   # markdown, for a findings report
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bench.config import canonical_json
from bench.reports.blocks import Cell, Column, Section, Table
from bench.reports.cases import BASELINE, ReportData, case_fields, row_seed, variant_label, varying_fields

CONFIDENCE = 0.95


@dataclass(frozen=True, slots=True)
class MeanCI:
    """The mean of n values and the half-width of its two-sided Student-t interval (None when n < 2)."""

    n: int
    mean: float
    half_width: float | None

    @classmethod
    def of(cls, values: Sequence[float], confidence: float = CONFIDENCE) -> MeanCI | None:
        x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
        if x.size == 0:
            return None
        if x.size < 2:
            return cls(1, float(x[0]), None)
        sem = float(x.std(ddof=1)) / math.sqrt(x.size)
        return cls(int(x.size), float(x.mean()), float(stats.t.ppf((1 + confidence) / 2, x.size - 1)) * sem)

    def text(self, digits: int = 2, signed: bool = False) -> str:
        mean = f"{self.mean:+.{digits}f}" if signed else f"{self.mean:.{digits}f}"
        return mean if self.half_width is None else f"{mean} ± {self.half_width:.{digits}f}"


@dataclass(frozen=True, slots=True)
class SeedRow:
    """One strategy in one case, over its seeds."""

    model: str
    workload: str
    variant: str  # the case fields that vary within its model x workload, seed aside
    strategy: str
    seeds: tuple[int, ...]
    loss: MeanCI | None  # the accuracy column (eval loss)
    gap: MeanCI | None  # loss - Bayes floor
    vs_baseline: MeanCI | None  # paired: loss - the baseline's loss of the same case, seed and run


def aggregate(data: ReportData, column: str = "eval_loss") -> list[SeedRow]:
    """Every (case, strategy) with an ok `column` value, over the latest row of each of its seeds."""
    ok = data.current[data.current["status"] == "ok"] if not data.current.empty else data.current
    if ok.empty or column not in ok or ok[column].isna().all():
        return []
    ok = ok[ok[column].notna()]
    keys = pd.Series([canonical_json(case_fields(r)) for _, r in ok.iterrows()], index=ok.index)  # case and seed, not run
    base_of: dict[str, float] = {}
    for idx in ok.sort_values("started_at", kind="stable").index:  # the latest baseline of a key wins
        if ok.at[idx, "strategy"] == BASELINE:
            base_of[keys[idx]] = float(ok.at[idx, column])
    base = ok.assign(**{f"{column}_base": [base_of.get(k, np.nan) for k in keys]})
    out = []
    for (model, workload), group in base.groupby(["model", "workload"], sort=True, dropna=False):
        rows = [r for _, r in group.iterrows()]
        fields = [f for f in varying_fields(rows) if f != "seed"]
        labels = [variant_label(r, fields) for r in rows]
        keyed = group.assign(_variant=labels, _seed=[row_seed(r) for r in rows])
        for (variant, strategy), g in keyed.groupby(["_variant", "strategy"], sort=True):
            gap = g[column] - g["bayes_loss"] if "bayes_loss" in g else pd.Series(dtype=float)
            paired = (g[column] - g[f"{column}_base"]).dropna() if strategy != BASELINE else pd.Series(dtype=float)
            out.append(
                SeedRow(
                    model=str(model),
                    workload=str(workload),
                    variant=str(variant),
                    strategy=str(strategy),
                    seeds=tuple(sorted(int(s) for s in g["_seed"] if s is not None)),
                    loss=MeanCI.of(g[column].tolist()),
                    gap=MeanCI.of(gap.dropna().tolist()),
                    vs_baseline=MeanCI.of(paired.tolist()),
                )  # fmt: skip
            )
    return out


def _cell(m: MeanCI | None, signed: bool = False) -> Cell:
    if m is None:
        return Cell("—", title="not measured")
    return Cell(m.text(3, signed), sort=m.mean, title=f"n={m.n}")


def section(data: ReportData) -> Section | None:
    """The report's table; None when no case has more than one seed (one seed needs no interval)."""
    rows = [r for r in aggregate(data) if len(r.seeds) > 1]
    if not rows:
        return None
    columns = (
        Column("model × workload", left=True), Column("case", left=True), Column("strategy", left=True),
        Column("n", "seeds averaged"), Column("eval loss", "mean ± 95% CI half-width (Student t) over seeds"),
        Column("gap to floor", "eval loss − Bayes floor, mean ± 95% CI"),
        Column("vs baseline", "per-seed eval loss − the baseline's of the same case and seed: mean ± 95% CI"),
    )  # fmt: skip
    body = tuple(
        (Cell(f"{r.model} × {r.workload}", left=True), Cell(r.variant, left=True), Cell(r.strategy, left=True),
         Cell(str(len(r.seeds)), sort=len(r.seeds), title=", ".join(map(str, r.seeds))),
         _cell(r.loss), _cell(r.gap), _cell(r.vs_baseline, signed=True))
        for r in rows
    )  # fmt: skip
    intro = (
        "Each case's strategies over their seeds (model init, data stream, codec noise): mean ± the half-width of a "
        f"{CONFIDENCE:.0%} Student-t interval. An interval of a paired difference that contains 0 says the seeds "
        "do not resolve a difference from the baseline."
    )
    return Section("seeds", "Accuracy over seeds", (Table(columns, body),), intro=intro)


def markdown(rows: list[SeedRow]) -> str:
    """The aggregate as a markdown table (for a findings report)."""
    lines = [
        "| model | case | strategy | n | eval loss | gap to floor | vs baseline (paired) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r.loss, r.gap, r.vs_baseline]
        text = [("—" if m is None else m.text(2, signed=i == 2)) for i, m in enumerate(cells)]
        lines.append(f"| {r.model} | {r.variant} | `{r.strategy}` | {len(r.seeds)} | {' | '.join(text)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from bench.storage.parquet import read_comm, read_results

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", type=Path)
    ap.add_argument("--column", default="eval_loss")
    args = ap.parse_args(argv)
    data = ReportData.of(read_results(args.results), read_comm(args.results))
    print(markdown(aggregate(data, args.column)))


if __name__ == "__main__":
    main()

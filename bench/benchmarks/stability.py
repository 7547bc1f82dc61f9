"""Benchmark: do two sweeps agree? Two complete sweeps back to back with `repeats = "auto"`, trial by trial.

    python -m bench.benchmarks.stability [--results results] [--max-launches N] [--links 1gbit,50mbit]
                                         [--only network|train] [--limit N] [--rows RUN1.parquet RUN2.parquet]

One sweep is suites/stability.toml (the network suite's five strategies on 1 Gbit/s and
50 Mbit/s) together with suites/stability_train.toml (the default suite's train trials),
their trials interleaved in shuffled rounds; it runs twice, with different round seeds,
into RESULTS/stability/. Then, per trial: each sweep's step p50 with its CI over launches,
the difference of the two medians, whether the CIs overlap, and the noise (a sweep flagged
noisy, or a trial that missed its CI target). The goal: every trial's two medians within
5% of each other, or the row says why not. Last, each sweep's break-even bandwidths over
rounds (bench.reports.network) with their CIs. `--rows A B` prints the table of two stored
sweeps again; `--max-launches`, `--links`, `--only` and `--limit` make a small run (a smoke test).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import pandas as pd

GOAL = 0.05  # two sweeps' medians within 5% of each other
SUITES = ("stability", "stability_train")


def _f(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and v != v) else float(v)


def _ci(row: pd.Series) -> str:
    p50, lo, hi = _f(row.get("latency_p50_s")), _f(row.get("latency_p50_s_ci_low")), _f(row.get("latency_p50_s_ci_high"))
    if p50 is None:
        return f"{row.get('status')}"
    ci = f" [{lo * 1e3:.1f}, {hi * 1e3:.1f}]" if lo is not None and hi is not None else " [no CI]"
    return f"{p50 * 1e3:.1f}{ci} n={int(row['launches']) if _f(row.get('launches')) else '?'}"


def label(row: pd.Series) -> str:
    net = f" @{row['network']}" if isinstance(row.get("network"), str) else ""
    return f"{row['strategy']} {row['model']} ws={row['world_size']}{net}"


@dataclasses.dataclass
class Tally:
    """How the trials of two sweeps fared against the goal."""

    trials: int = 0
    within: int = 0  # medians within GOAL
    overlap: int = 0  # launch CIs overlap
    flagged_misses: int = 0  # not within GOAL, and a row says why
    unflagged_misses: int = 0  # not within GOAL, and no row says why
    flagged: int = 0  # trials a row flags, within GOAL or not

    @property
    def ok(self) -> int:
        return self.within + self.flagged_misses

    def text(self) -> str:
        return (f"{self.within} of {self.trials} trials' medians within {GOAL:.0%}; {self.overlap} of {self.trials} "
                f"pairs of launch CIs overlap; of the {self.trials - self.within} others, {self.flagged_misses} flagged "
                f"and {self.unflagged_misses} NOT flagged. ({self.flagged} of {self.trials} trials carry a flag, "
                f"within {GOAL:.0%} or not: a flag on every row says only that nothing here reached its target.)")  # fmt: skip


def compare_sweeps(a: pd.DataFrame, b: pd.DataFrame) -> tuple[list[dict[str, Any]], Tally]:
    """One line per trial of both sweeps; and the tally against the goal."""
    lines, tally = [], Tally()
    b_by = {r["trial_id"]: r for _, r in b.iterrows()}
    for _, ra in a.sort_values(["suite", "strategy", "model", "world_size", "network"], na_position="first").iterrows():
        rb = b_by.get(ra["trial_id"])
        if rb is None:
            continue
        pa, pb = _f(ra.get("latency_p50_s")), _f(rb.get("latency_p50_s"))
        diff = (pb / pa - 1.0) if pa and pb else None
        overlap = None
        if None not in (_f(ra.get("latency_p50_s_ci_low")), _f(rb.get("latency_p50_s_ci_low"))):
            overlap = not (ra["latency_p50_s_ci_high"] < rb["latency_p50_s_ci_low"] or rb["latency_p50_s_ci_high"] < ra["latency_p50_s_ci_low"])
        flags = [f"sweep {i} noisy" for i, r in ((1, ra), (2, rb)) if r.get("noisy") is True]
        flags += [f"sweep {i} missed its CI target ({r.get('repeat_stop')})" for i, r in ((1, ra), (2, rb))
                  if r.get("repeat_target_met") is False]  # fmt: skip
        good = diff is not None and abs(diff) <= GOAL
        tally.trials += 1
        tally.within += good
        tally.overlap += bool(overlap)
        tally.flagged += bool(flags)
        tally.flagged_misses += not good and bool(flags)
        tally.unflagged_misses += not good and not flags
        lines.append({"trial": label(ra), "sweep 1": _ci(ra), "sweep 2": _ci(rb),
                      "diff": "–" if diff is None else f"{diff * 100:+.1f}%",
                      "CIs overlap": "–" if overlap is None else ("yes" if overlap else "NO"),
                      "noise": "; ".join(flags) or ("" if good else "NOT FLAGGED")})  # fmt: skip
    return lines, tally


def markdown(lines: list[dict[str, Any]]) -> str:
    if not lines:
        return "(no trial in both sweeps)"
    head = list(lines[0])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(line[h]) for h in head) + " |" for line in lines]
    return "\n".join(out)


def break_evens(rows: pd.DataFrame) -> list[str]:
    from bench.reports import network

    out = []
    for case in network.analyse(rows):
        for be in case.rows:
            out.append(f"  {be.curve.strategy}: {network.round_text(be.over_rounds)}")
    return out


def summarize(a: pd.DataFrame, b: pd.DataFrame) -> int:
    from bench.runner.noise import describe

    for i, df in ((1, a), (2, b)):
        first = df[df["noisy"].notna()].iloc[0].to_dict() if df["noisy"].notna().any() else {}
        print(f"sweep {i}: run {df['run_id'].iloc[0]}, round seed {df['round_seed'].dropna().iloc[0] if df['round_seed'].notna().any() else '–'}, "
              f"{describe(first) if first else 'noise not measured'}")  # fmt: skip
    lines, tally = compare_sweeps(a, b)
    print(markdown(lines))
    print(f"\n{tally.text()}")
    for i, df in ((1, a), (2, b)):
        found = break_evens(df)
        if found:
            print(f"\nbreak-even over rounds, sweep {i}:")
            print("\n".join(found))
    return 0 if tally.ok == tally.trials else 1


def suite_of(max_launches: int | None, links: list[str] | None, only: str | None, limit: int | None = None) -> Any:
    """The stability suites' trials as one suite, narrowed for a small run."""
    from bench.runner import suite as suites

    loaded = [suites.load(name) for name in SUITES if only is None or (name == "stability") == (only == "network")]
    trials = []
    for s in loaded:
        for t in s.trials:
            cfg = t.config
            if links and cfg.network is not None and cfg.network not in links:
                continue
            if max_launches is not None:
                cfg = dataclasses.replace(cfg, repeat_max=max_launches)
            trials.append(dataclasses.replace(t, config=cfg))
    return suites.Suite("stability", "make stability", loaded[0].path, trials[:limit])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--max-launches", type=int, help="cap every trial at N launches (>= 3), for a small run")
    p.add_argument("--links", help="comma-separated links of the network trials to keep, e.g. 1gbit")
    p.add_argument("--only", choices=["network", "train"], help="only the network or only the train trials")
    p.add_argument("--limit", type=int, help="only the first N trials (network: baseline, fp16_compress, ... each on every link)")
    p.add_argument("--rows", nargs=2, type=Path, metavar="RUN.parquet", help="print the table of two stored sweeps")
    args = p.parse_args(argv)
    from bench.errors import BenchError
    from bench.storage.parquet import read_results

    try:
        if args.rows:
            return summarize(*(read_results([r]) for r in args.rows))
        if args.max_launches is not None and args.max_launches < 3:
            raise BenchError(f"--max-launches must be >= 3 (a CI needs 3 launches), got {args.max_launches}")
        from bench.runner.sweep import run_sweep

        suite = suite_of(args.max_launches, args.links.split(",") if args.links else None, args.only, args.limit)
        if not suite.trials:
            raise BenchError("no trial left to run (check --links and --only)")
        paths = []
        for i in (1, 2):
            print(f"sweep {i} of 2: {len(suite.trials)} trials", file=sys.stderr, flush=True)
            outcome = run_sweep(suite, args.results, force=True, progress=False)
            if outcome.results_path is None:
                raise BenchError(f"sweep {i} wrote no rows")
            paths.append(outcome.results_path)
            print(f"sweep {i}: {outcome.results_path} ({dict(outcome.counts)})", file=sys.stderr, flush=True)
    except BenchError as exc:
        print(f"commbench: error: {exc}", file=sys.stderr)
        return 2
    return summarize(*(read_results([p]) for p in paths))


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: per-trial fixed overhead of a sweep, spawn vs forkserver launch path (interleaved).

    python -m bench.benchmarks.sweep_overhead [--suite default] [--limit N] [--results results]

Every trial of the suite runs twice back to back, once per launch path, alternating which
goes first so drift and load hit both alike. A trial's fixed overhead is its `trial_wall_s`
minus its measured steps (the sum of `latency_samples_s`): spawning, imports, rendezvous,
model build, warmup, evaluation, the profiler pass and teardown. Prints, per path, the
median overhead with a bootstrap 95% CI and the median of each phase; the median of the
per-trial ratios spawn/forkserver with its CI; the fork server's one-off start (paid once
per sweep process, outside every trial); and whether each pair of rows agrees in every
column that is not a timing (`schema.RUN_VARYING`). Rows go to RESULTS/sweep-overhead/.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from bench.distributed import forkserver
from bench.runner import suite as suites
from bench.runner.sweep import new_run_id
from bench.runner.trial import run_trial
from bench.storage.parquet import RunWriter
from bench.storage.schema import PHASE_COLUMNS, deterministic_view

METHODS = ("spawn", "forkserver")


def fixed_overhead_s(row: dict[str, Any]) -> float:
    """Wall time of the trial that was not a measured step."""
    return float(row["trial_wall_s"]) - float(sum(row["latency_samples_s"]))


def differing(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Columns outside `RUN_VARYING` whose values differ between two rows of one trial."""
    va, vb = deterministic_view(a), deterministic_view(b)
    return sorted(k for k in set(va) | set(vb) if va.get(k) != vb.get(k))


def median_ci(values: list[float]) -> tuple[float, float, float]:
    arr = np.asarray(values, dtype=np.float64)
    if len(arr) < 2:
        return float(arr[0]), float("nan"), float("nan")
    ci = stats.bootstrap((arr,), np.median, confidence_level=0.95, random_state=0).confidence_interval
    return float(np.median(arr)), float(ci.low), float(ci.high)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="default", help="suite file or name (default: default)")
    p.add_argument("--limit", type=int, help="only the first N trials of the suite that run")
    p.add_argument("--results", type=Path, default=Path("results"))
    args = p.parse_args(argv)
    suite = suites.load(args.suite)
    trials = [t for t in suite.trials if not t.skip][: args.limit]
    if not trials:
        print(f"sweep-overhead: error: suite {suite.name} has no trial to run")
        return 2
    run_id = new_run_id()
    writer = RunWriter(args.results / "sweep-overhead", run_id)
    start_s = forkserver.ensure_started()
    print(f"fork server started in {start_s:.2f} s (once per sweep process, outside every trial)")
    over: dict[str, list[float]] = {m: [] for m in METHODS}
    phases: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
    ratios, mismatches = [], 0
    for i, trial in enumerate(trials):
        cfg = trial.config
        rows = {}
        for method in METHODS if i % 2 == 0 else METHODS[::-1]:
            log_dir = args.results / "sweep-overhead" / "logs" / run_id / f"{cfg.trial_id}-{method}"
            row, comm = run_trial(cfg, run_id, trial.composition.params(), log_dir, launch_method=method)
            writer.add(row, comm)
            if row["status"] != "ok":
                print(f"sweep-overhead: error: {method} {cfg.trial_id} {row['status']}: {row['error']}")
                return 1
            rows[method] = row
            over[method].append(fixed_overhead_s(row))
            phases[method].append({c: row[c] for c in PHASE_COLUMNS if row.get(c) is not None})
        ratios.append(over["spawn"][-1] / over["forkserver"][-1])
        diff = differing(rows["spawn"], rows["forkserver"])
        mismatches += bool(diff)
        print(f"trial {i + 1}/{len(trials)} {cfg.strategy} {cfg.model} {cfg.workload} ws={cfg.world_size}: fixed overhead "
              f"spawn {over['spawn'][-1]:.2f} s, forkserver {over['forkserver'][-1]:.2f} s; "
              f"non-timing columns {'differ: ' + ', '.join(diff) if diff else 'identical'}")  # fmt: skip
    print(f"\nper-trial fixed overhead (trial_wall_s - measured steps), {len(trials)} trials of suite {suite.name}:")
    for method in METHODS:
        med, low, high = median_ci(over[method])
        print(f"  {method:<10} median {med:.2f} s, 95% CI [{low:.2f}, {high:.2f}]")
        medians = {c.removeprefix("phase_").removesuffix("_s"): np.median([p.get(c, np.nan) for p in phases[method]])
                   for c in PHASE_COLUMNS}  # fmt: skip
        print("             phases (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in medians.items()))
    med, low, high = median_ci(ratios)
    print(f"  ratio spawn/forkserver: median of per-trial ratios {med:.2f}, 95% CI [{low:.2f}, {high:.2f}]")
    amortized = start_s / len(trials)
    print(f"  forkserver with its start spread over these trials: {np.median(over['forkserver']) + amortized:.2f} s per trial")
    print(f"  rows identical outside timing columns: {len(trials) - mismatches}/{len(trials)} pairs")
    print(f"rows: {writer.trials_path}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: per-trial fixed overhead of a sweep, spawn vs forkserver launch path (interleaved).

    python -m bench.benchmarks.sweep_overhead [--suite default] [--limit N] [--results results]

Every trial of the suite runs twice back to back, once per launch path, alternating which
goes first so drift and load hit both alike. A trial's fixed overhead is its `trial_wall_s`
minus its measured steps (the sum of `latency_samples_s`): spawning, imports, rendezvous,
model build, warmup, evaluation, the profiler pass and teardown. Prints, per path, the
median overhead with a bootstrap 95% CI, the same for the phases the launch path owns
(spawn, import, rendezvous, teardown) and the median of each phase; the median of the
per-trial ratios spawn/forkserver with its CI; the fork server's one-off start (paid once
per sweep process, outside every trial); and whether each pair of rows agrees in every
column that is not a timing (`schema.RUN_VARYING`). Rows go to RESULTS/sweep-overhead/;
`--rows FILE` prints the summary of such a file again.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from bench.storage.schema import PHASE_COLUMNS, deterministic_view

# Every rank re-imports the launching program's main module (multiprocessing's
# `__mp_main__`): this one imports the runner, scipy and pyarrow only inside its functions,
# so that spawned ranks pay what they pay under `commbench sweep`, and no more.

METHODS = ("spawn", "forkserver")


def fixed_overhead_s(row: dict[str, Any]) -> float:
    """Wall time of the trial that was not a measured step."""
    return float(row["trial_wall_s"]) - float(sum(row["latency_samples_s"]))


def differing(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Columns outside `RUN_VARYING` whose values differ between two rows of one trial."""
    va, vb = deterministic_view(a), deterministic_view(b)
    return sorted(k for k in set(va) | set(vb) if _plain(va.get(k)) != _plain(vb.get(k)))


def _plain(value: Any) -> Any:
    """A value as a row dict holds it, also when it was read back from parquet (arrays, NaN for null)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and value != value:
        return None
    return value


def median_ci(values: list[float]) -> tuple[float, float, float]:
    from bench.compare.stats import bootstrap_median_ci

    return bootstrap_median_ci(values)


# The phases the launch path itself owns; the rest are work the suite asks for.
LAUNCH_PHASES = ("phase_spawn_s", "phase_import_s", "phase_rendezvous_s", "phase_teardown_s")


def launch_overhead_s(row: dict[str, Any]) -> float:
    """Seconds of the trial spent starting and stopping ranks: spawn, import, rendezvous, teardown."""
    return float(sum(row[c] for c in LAUNCH_PHASES))


def summarize(pairs: list[dict[str, dict[str, Any]]], start_s: float | None) -> int:
    """Print the comparison of (spawn row, forkserver row) pairs; 1 when a pair differs outside timings."""
    print(f"\nper-trial fixed overhead (trial_wall_s - measured steps), {len(pairs)} trials, each on both paths:")
    for method in METHODS:
        rows = [p[method] for p in pairs]
        med, low, high = median_ci([fixed_overhead_s(r) for r in rows])
        print(f"  {method:<10} median {med:.2f} s, 95% CI [{low:.2f}, {high:.2f}]")
        med, low, high = median_ci([launch_overhead_s(r) for r in rows])
        print(f"             of which spawn+import+rendezvous+teardown: median {med:.2f} s, 95% CI [{low:.2f}, {high:.2f}]")
        medians = {c.removeprefix("phase_").removesuffix("_s"): np.nanmedian([r[c] if r.get(c) is not None else np.nan for r in rows])
                   for c in PHASE_COLUMNS}  # fmt: skip
        print("             phases (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in medians.items()))
    for name, fn in (("fixed overhead", fixed_overhead_s), ("launch phases", launch_overhead_s)):
        med, low, high = median_ci([fn(p["spawn"]) / fn(p["forkserver"]) for p in pairs])
        print(f"  ratio spawn/forkserver, {name}: median of per-trial ratios {med:.2f}, 95% CI [{low:.2f}, {high:.2f}]")
    if start_s is not None:
        spread = np.median([fixed_overhead_s(p["forkserver"]) for p in pairs]) + start_s / len(pairs)
        print(f"  forkserver with its {start_s:.2f} s start spread over these trials: {spread:.2f} s per trial")
    same = sum(not differing(p["spawn"], p["forkserver"]) for p in pairs)
    print(f"  rows identical outside timing columns: {same}/{len(pairs)} pairs")
    return 0 if same == len(pairs) else 1


def pairs_from(path: Path) -> list[dict[str, dict[str, Any]]]:
    """(spawn, forkserver) rows of each trial in a results file this benchmark wrote."""
    from bench.storage.parquet import read_results

    df = read_results([path])
    pairs = []
    for _, group in df[df["status"] == "ok"].groupby("trial_id", sort=False):
        by = {r["launch_method"]: r.to_dict() for _, r in group.iterrows()}
        if set(METHODS) <= set(by):
            pairs.append({m: by[m] for m in METHODS})
    return pairs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="default", help="suite file or name (default: default)")
    p.add_argument("--limit", type=int, help="only the first N trials of the suite that run")
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--rows", type=Path, help="only summarize a results file an earlier run of this benchmark wrote")
    args = p.parse_args(argv)
    if args.rows:
        pairs = pairs_from(args.rows)
        return summarize(pairs, None) if pairs else 2
    from bench.distributed import forkserver
    from bench.runner import suite as suites
    from bench.runner.sweep import new_run_id
    from bench.runner.trial import run_trial
    from bench.storage.parquet import RunWriter

    suite = suites.load(args.suite)
    trials = [t for t in suite.trials if not t.skip][: args.limit]
    if not trials:
        print(f"sweep-overhead: error: suite {suite.name} has no trial to run")
        return 2
    run_id = new_run_id()
    writer = RunWriter(args.results / "sweep-overhead", run_id)
    start_s = forkserver.ensure_started()
    print(f"fork server started in {start_s:.2f} s (once per sweep process, outside every trial)")
    pairs = []
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
        pairs.append(rows)
        diff = differing(rows["spawn"], rows["forkserver"])
        print(f"trial {i + 1}/{len(trials)} {cfg.strategy} {cfg.model} {cfg.workload} ws={cfg.world_size}: fixed overhead "
              f"spawn {fixed_overhead_s(rows['spawn']):.2f} s, forkserver {fixed_overhead_s(rows['forkserver']):.2f} s; "
              f"non-timing columns {'differ: ' + ', '.join(diff) if diff else 'identical'}")  # fmt: skip
    code = summarize(pairs, start_s)
    print(f"rows: {writer.trials_path}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: what byte accounting costs in step latency (tracked vs untracked, interleaved).

    python -m bench.comm.overhead [--model gpt2-tiny] [--world-size 2] [--pairs 6] [--steps 40]

Runs `pairs` pairs of identical train trials, one with byte accounting on (flight
recorder, p2p interposer, socket counters) and one with it off (flight recorder buffer 0),
alternating which goes first so drift on a shared machine hits both sides alike. The
profiler pass is off on both sides. Prints each pair's p50 ratio, the median ratio and a
bootstrap 95% confidence interval, and writes every row to results/overhead/.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from scipy import stats

from bench.runner.config import TrialConfig
from bench.runner.suite import check_feasible
from bench.runner.sweep import new_run_id
from bench.runner.trial import run_trial
from bench.storage.parquet import RunWriter


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gpt2-tiny")
    p.add_argument("--strategy", default="baseline")
    p.add_argument("--world-size", type=int, default=2)
    p.add_argument("--pairs", type=int, default=6)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--results", type=Path, default=Path("results"))
    args = p.parse_args(argv)

    base = TrialConfig(
        suite="overhead", strategy=args.strategy, model=args.model, workload="train", world_size=args.world_size,
        steps=args.steps, warmup_steps=3, batch_size=args.batch_size, seq_len=args.seq_len, eval_batches=0,
        profile_steps=0,
    )  # fmt: skip
    check_feasible(base, "overhead")
    run_id = new_run_id()
    writer = RunWriter(args.results / "overhead", run_id)
    ratios = []
    for i in range(args.pairs):
        order = (True, False) if i % 2 == 0 else (False, True)
        p50 = {}
        for tracked in order:
            cfg = dataclasses.replace(base, track_comm=tracked, seed=i)
            row, comm = run_trial(cfg, run_id, [], args.results / "overhead" / "logs" / run_id / cfg.trial_id)
            writer.add(row, comm)
            if row["status"] != "ok":
                print(f"trial failed: {row['error']}")
                return 1
            p50[tracked] = row["latency_p50_s"]
        ratios.append(p50[True] / p50[False])
        print(f"pair {i}: tracked p50 {p50[True] * 1e3:.2f} ms, untracked {p50[False] * 1e3:.2f} ms, ratio {ratios[-1]:.4f}")
    arr = np.asarray(ratios)
    ci = stats.bootstrap((arr,), np.median, confidence_level=0.95, random_state=0).confidence_interval
    print(
        f"{args.model} ws={args.world_size} {args.strategy}: tracked/untracked p50 ratio, median of {len(arr)} pairs "
        f"{np.median(arr):.4f} (overhead {100 * (np.median(arr) - 1):+.2f}%), 95% CI [{ci.low:.4f}, {ci.high:.4f}]"
    )
    print(f"rows: {writer.trials_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

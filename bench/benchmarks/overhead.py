"""Benchmark: what byte accounting costs in step latency (tracked vs untracked, interleaved).

    python -m bench.benchmarks.overhead [--model gpt2-tiny] [--world-size 2] [--pairs 6] [--steps 40]
                                  [--call-pairs 12] [--calls 20000]

Two measurements, interleaved in one run:

1. Whole steps. `pairs` pairs of identical train trials, one with byte accounting on
   (flight recorder, p2p interposer, socket counters) and one with it off (flight
   recorder buffer 0), alternating which goes first so drift hits both sides alike. The
   profiler pass is off on both sides. Prints each pair's p50 ratio, the median ratio and
   a bootstrap 95% CI, and writes every row to results/overhead/. On 2 shared cores the
   p50 of identical launches moves by +-10%, so this ratio cannot resolve 2%.
2. Per collective. The only accounting work inside a timed step is the flight recorder's
   append per collective (a Python stack capture and a locked push; the window's
   snapshots happen outside the steps, and DDP issues no point-to-point ops for the
   interposer to see). `call_pairs` pairs of one-rank gloo launches, recorder on and off,
   each time `calls` tiny all_reduces issued `STACK_DEPTH` Python frames deep (a train
   step's depth). One rank and one element keep network and compute noise out, so the
   paired difference is the recorder's own cost. Multiplied by the collectives per step
   the tracked trials logged and divided by the untracked p50, it bounds the overhead.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from bench.comm.accounting import flight_recorder_entries
from bench.compare.stats import bootstrap_median_ci
from bench.contracts import TrialConfig
from bench.distributed.env import init_rank, shutdown
from bench.distributed.launch import launch
from bench.runner.suite import check_feasible
from bench.runner.sweep import new_run_id
from bench.runner.trial import run_trial
from bench.storage.parquet import RunWriter

# Extra Python frames above each timed all_reduce. The recorder captures the Python stack,
# so its cost grows with depth; a gpt2-tiny DDP bucket all_reduce in a real trial is issued
# 17 frames deep (its flight-recorder stack, measured), so 30 extra over-states the cost.
STACK_DEPTH = 30
_BLOCKS = 5


def _at_depth(depth: int, fn: Callable[[], float]) -> float:
    return fn() if depth <= 0 else _at_depth(depth - 1, fn)


@record
def _time_calls(payload: dict[str, Any]) -> float:
    """Median seconds per tiny all_reduce on a one-rank gloo group (one launch)."""
    init_rank("cpu", 1, flight_recorder=payload["recorder"])
    try:
        x = torch.ones(1)
        n = payload["calls"] // _BLOCKS

        def block() -> float:
            t0 = time.perf_counter()
            for _ in range(n):
                dist.all_reduce(x)
            return (time.perf_counter() - t0) / n

        block()  # warm up
        seconds = float(np.median([_at_depth(STACK_DEPTH, block) for _ in range(_BLOCKS)]))
        recorded = len(flight_recorder_entries())
        if (recorded > 0) != payload["recorder"]:
            raise RuntimeError(f"flight recorder {'on' if payload['recorder'] else 'off'} but {recorded} entries")
        return seconds
    finally:
        shutdown()


def _alternating(
    pairs: int, measure: Callable[[int, bool], float], report: Callable[[int, float, float], str]
) -> list[tuple[float, float]]:
    """(on, off) values of `measure(i, on)` per pair, alternating which side runs first."""
    out = []
    for i in range(pairs):
        got = {on: measure(i, on) for on in ((True, False) if i % 2 == 0 else (False, True))}
        out.append((got[True], got[False]))
        print(report(i, *out[-1]))
    return out


def per_call_cost(pairs: int, calls: int, log_dir: Path) -> tuple[float, float, float]:
    """Flight-recorder cost per collective (s): median paired difference and its 95% CI."""

    def measure(i: int, on: bool) -> float:
        res = launch(_time_calls, {"recorder": on, "calls": calls}, nprocs=1, log_dir=log_dir / f"call{i}{int(on)}",
                     timeout_s=300)  # fmt: skip
        if res.error is not None:
            raise RuntimeError(res.error)
        return res.outputs[0]

    def report(i: int, on: float, off: float) -> str:
        return f"call pair {i}: recorder on {on * 1e6:.2f} us/call, off {off * 1e6:.2f} us/call"

    got = _alternating(pairs, measure, report)
    return _median_ci([on - off for on, off in got])


def _median_ci(values: list[float]) -> tuple[float, float, float]:
    return bootstrap_median_ci(values)


@dataclasses.dataclass
class StepPairs:
    ratios: list[float] = dataclasses.field(default_factory=list)  # tracked p50 / untracked p50
    untracked_p50_s: list[float] = dataclasses.field(default_factory=list)
    calls_per_step: list[float] = dataclasses.field(default_factory=list)  # logged by the tracked side


def step_pairs(base: TrialConfig, pairs: int, run_id: str, writer: RunWriter, log_dir: Path) -> StepPairs:
    """Whole train trials, tracked and untracked, alternating which goes first."""
    out = StepPairs()

    def measure(i: int, tracked: bool) -> float:
        cfg = dataclasses.replace(base, track_comm=tracked, seed=i)
        row, comm = run_trial(cfg, run_id, [], log_dir / cfg.trial_id)
        writer.add(row, comm)
        if row["status"] != "ok":
            raise RuntimeError(f"trial failed: {row['error']}")
        if tracked:
            out.calls_per_step.append(row["comm_calls_per_step"])
        return row["latency_p50_s"]

    def report(i: int, on: float, off: float) -> str:
        return f"pair {i}: tracked p50 {on * 1e3:.2f} ms, untracked {off * 1e3:.2f} ms, ratio {on / off:.4f}"

    got = _alternating(pairs, measure, report)
    out.ratios = [on / off for on, off in got]
    out.untracked_p50_s = [off for _, off in got]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gpt2-tiny")
    p.add_argument("--strategy", default="baseline")
    p.add_argument("--world-size", type=int, default=2)
    p.add_argument("--pairs", type=int, default=6)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--call-pairs", type=int, default=12, help="pairs of per-collective launches")
    p.add_argument("--calls", type=int, default=20000, help="all_reduces timed per launch")
    p.add_argument("--results", type=Path, default=Path("results"))
    args = p.parse_args(argv)
    if args.pairs < 2 or args.call_pairs < 2:
        p.error("--pairs and --call-pairs need at least 2 each (a median and its CI)")

    base = TrialConfig(
        suite="overhead", strategy=args.strategy, model=args.model, workload="train", world_size=args.world_size,
        steps=args.steps, warmup_steps=3, batch_size=args.batch_size, seq_len=args.seq_len, eval_batches=0,
        profile_steps=0,
    )  # fmt: skip
    check_feasible(base, "overhead")
    run_id = new_run_id()
    writer = RunWriter(args.results / "overhead", run_id)
    log_dir = args.results / "overhead" / "logs" / run_id
    try:
        steps = step_pairs(base, args.pairs, run_id, writer, log_dir)
    except RuntimeError as exc:
        print(f"overhead: error: {exc}")
        return 1
    ratio, low, high = _median_ci(steps.ratios)
    print(
        f"{args.model} ws={args.world_size} {args.strategy}: tracked/untracked p50 ratio, median of {args.pairs} pairs "
        f"{ratio:.4f} (overhead {100 * (ratio - 1):+.2f}%), 95% CI [{low:.4f}, {high:.4f}]"
    )
    untracked = np.asarray(steps.untracked_p50_s)
    print(
        f"launch-to-launch noise: untracked p50 {untracked.min() * 1e3:.1f}-{untracked.max() * 1e3:.1f} ms over the pairs "
        f"(coefficient of variation {100 * untracked.std(ddof=1) / untracked.mean():.1f}%)"
    )
    print(f"rows: {writer.trials_path}")
    try:
        cost, low, high = per_call_cost(args.call_pairs, args.calls, log_dir)
    except RuntimeError as exc:
        print(f"overhead: error: a per-collective launch failed: {exc}")
        return 1
    k, step = float(np.median(steps.calls_per_step)), float(np.median(steps.untracked_p50_s))
    print(
        f"flight recorder: {cost * 1e6:+.2f} us per collective, 95% CI [{low * 1e6:+.2f}, {high * 1e6:+.2f}] "
        f"(median of {args.call_pairs} pairs); x {k:g} collectives per step / untracked p50 {step * 1e3:.2f} ms "
        f"= {100 * k * cost / step:+.4f}% of a step (95% CI upper bound {100 * k * high / step:+.4f}%)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

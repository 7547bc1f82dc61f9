"""Benchmark: thread placement (`pin`) A/B, the collectives workload against a plain torchrun loop, interleaved.

    python -m bench.benchmarks.placement [--rounds 3] [--calls 50] [--warmup 3] [--size-bytes 1048576]
                                         [--train-steps 20] [--no-train] [--results results]

Each round runs every set-up once, in an order rotated by the round so drift on a shared
machine hits each set-up at every position:

- the `collectives` workload, one `size_bytes` all_reduce per step at 2 ranks, under each
  `pin` policy (compute, all, none): the row's `latency_p50_s`;
- the plain loop `bench/benchmarks/plain_allreduce.py` under `torchrun`, pinning after
  `init_process_group` (gloo's threads free) and before it. It times what the workload
  times: the same float32 tensor, `warmup` untimed calls, a barrier, then `calls` blocking
  calls each bracketed by `perf_counter`, max over ranks per call, median;
- a gpt2-tiny DDP train step under each policy (`--no-train` leaves it out).

Prints one markdown table: per set-up, the median of its per-launch medians, their range,
and the median over rounds of its per-round ratio to the plain loop pinned after init (for
all_reduce) or to `pin=all` (train). Rows go to `<results>/placement/`.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.contracts import PIN_POLICIES, TrialConfig
from bench.runner.suite import NO_MODEL
from bench.runner.sweep import new_run_id
from bench.runner.trial import run_trial
from bench.storage.parquet import RunWriter

PLAIN = Path(__file__).with_name("plain_allreduce.py")
WORLD = 2
PLAIN_PINS = ("after", "before")
ACCEPT = 0.15  # the collectives workload within 15% of the plain loop (issue #10)


@dataclasses.dataclass(frozen=True)
class Setup:
    name: str
    kind: str  # "all_reduce" or "train": the table section, and which set-up its ratio is to
    measure: Callable[[int], float]  # round -> median seconds


def plain_loop(pin: str, size_bytes: int, warmup: int, calls: int, timeout_s: float = 300) -> float:
    """Median seconds per call of the plain torchrun loop (one launch)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD}", str(PLAIN),
           f"--pin={pin}", f"--size-bytes={size_bytes}", f"--warmup={warmup}", f"--calls={calls}"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    found = re.search(r"plain_allreduce median_s=([0-9.eE+-]+)", out.stdout)
    if out.returncode != 0 or found is None:
        raise RuntimeError(f"plain loop (pin {pin}) failed, exit {out.returncode}:\n{out.stderr[-2000:]}")
    return float(found.group(1))


def setups(args: argparse.Namespace, run_id: str, writer: RunWriter, log_dir: Path) -> list[Setup]:
    def trial(cfg: TrialConfig) -> Callable[[int], float]:
        def measure(i: int) -> float:
            cfg_i = dataclasses.replace(cfg, seed=i)
            row, comm = run_trial(cfg_i, run_id, [], log_dir / f"{cfg_i.trial_id}-{i}")
            writer.add(row, comm)
            if row["status"] != "ok":
                raise RuntimeError(f"{cfg_i.workload} pin={cfg_i.pin} {row['status']}: {row['error']}")
            return float(row["latency_p50_s"])

        return measure

    common = dict(suite="placement", strategy="baseline", world_size=WORLD, profile_steps=0, eval_batches=0)
    coll = TrialConfig(**common, model=NO_MODEL, workload="collectives", steps=args.calls, warmup_steps=args.warmup,
                       options={"op": "all_reduce", "size_bytes": args.size_bytes})  # fmt: skip
    train = TrialConfig(**common, model="gpt2-tiny", workload="train", steps=args.train_steps, warmup_steps=3)
    mb = f"{args.size_bytes / 2**20:g} MB"
    out = [Setup(f"collectives workload, {mb} all_reduce, pin={p}", "all_reduce", trial(dataclasses.replace(coll, pin=p)))
           for p in PIN_POLICIES]  # fmt: skip
    out += [Setup(f"plain torchrun loop, {mb} all_reduce, pinned {p} init", "all_reduce", lambda i, p=p: plain_loop(p, args.size_bytes, args.warmup, args.calls))
            for p in PLAIN_PINS]  # fmt: skip
    if args.train:
        out += [Setup(f"gpt2-tiny DDP train step, pin={p}", "train", trial(dataclasses.replace(train, pin=p)))
                for p in PIN_POLICIES]  # fmt: skip
    return out


def run_rounds(todo: list[Setup], rounds: int) -> dict[str, list[float]]:
    got: dict[str, list[float]] = {s.name: [] for s in todo}
    for i in range(rounds):
        k = i % len(todo)
        for s in todo[k:] + todo[:k]:
            got[s.name].append(s.measure(i))
            print(f"round {i}: {s.name}: {got[s.name][-1] * 1e3:.3f} ms", flush=True)
    return got


def table(todo: list[Setup], got: dict[str, list[float]]) -> str:
    """The markdown table: median, range, and the median per-round ratio to each section's reference."""
    ref = {"all_reduce": todo[len(PIN_POLICIES)].name, "train": "gpt2-tiny DDP train step, pin=all"}
    lines = ["| set-up | median (ms) | launches (ms) | ratio |", "|---|---|---|---|"]
    for s in todo:
        v = np.asarray(got[s.name])
        base = np.asarray(got[ref[s.kind]])
        ratio = float(np.median(v / base))
        lines.append(f"| {s.name} | {np.median(v) * 1e3:.3f} | {v.min() * 1e3:.3f}-{v.max() * 1e3:.3f} | {ratio:.2f} |")
    lines.append("")
    lines.append(f"ratio: median over rounds of the per-round ratio to `{ref['all_reduce']}` (all_reduce rows)"
                 + (f" or to `{ref['train']}` (train rows)" if any(s.kind == "train" for s in todo) else ""))  # fmt: skip
    return "\n".join(lines)


def verdict(todo: list[Setup], got: dict[str, list[float]]) -> str:
    coll = np.asarray(got[todo[0].name])  # the collectives workload under the default policy, compute
    plain = np.asarray(got[todo[len(PIN_POLICIES)].name])
    ratio = float(np.median(coll / plain))
    ok = abs(ratio - 1) <= ACCEPT
    return (f"collectives (pin=compute) / plain loop (pinned after init): {ratio:.3f} "
            f"({'within' if ok else 'NOT within'} {ACCEPT:.0%}; per round: {', '.join(f'{r:.2f}' for r in coll / plain)})")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calls", type=int, default=50, help="timed all_reduces per launch (steps of the workload)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--size-bytes", type=int, default=1 << 20)
    p.add_argument("--train-steps", type=int, default=20)
    p.add_argument("--no-train", dest="train", action="store_false", help="leave out the gpt2-tiny train step")
    p.add_argument("--results", type=Path, default=Path("results"))
    args = p.parse_args(argv)
    if args.rounds < 1 or args.calls < 1 or args.warmup < 0 or args.size_bytes < 4:
        p.error("--rounds and --calls need at least 1, --warmup at least 0, --size-bytes at least 4")
    run_id = new_run_id()
    writer = RunWriter(args.results / "placement", run_id)
    todo = setups(args, run_id, writer, args.results / "placement" / "logs" / run_id)
    try:
        got = run_rounds(todo, args.rounds)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"placement: error: {exc}")
        return 1
    print()
    print(table(todo, got))
    print()
    print(verdict(todo, got))
    print(f"rows: {writer.trials_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

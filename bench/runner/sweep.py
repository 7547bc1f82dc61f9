"""Run a suite: expand it, skip what is already done, run each trial, write rows as they finish."""

from __future__ import annotations

import random
import secrets
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench.contracts import MEASUREMENT_VERSION
from bench.distributed.forkserver import DEFAULT_START_METHOD
from bench.distributed.launch import Placement
from bench.errors import BenchError
from bench.runner.executors import Executor, LocalExecutor, PackingExecutor, TrialJob
from bench.runner.noise import NoiseMeter
from bench.runner.repeats import Launch, Repeats, combine
from bench.runner.suite import Suite, Trial
from bench.runner.trial import base_row, skipped_row
from bench.storage.parquet import RunWriter, completed_trials
from bench.system import now_utc


def new_run_id() -> str:
    return now_utc().strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


@dataclass
class SweepOutcome:
    run_id: str
    results_path: Path | None
    counts: Counter[str] = field(default_factory=Counter)
    cached: int = 0

    @property
    def failed(self) -> int:
        return self.counts["failed"]


def plan(suite: Suite, results_dir: Path, force: bool) -> list[tuple[Trial, str]]:
    """Each trial with what a sweep would do with it: run, skip (reason) or done (cached).

    A trial is done when a row of it was recorded ok by the current measurement code
    (`MEASUREMENT_VERSION`); one recorded by older code is run again, and says so.
    """
    done = {} if force else completed_trials(results_dir, MEASUREMENT_VERSION)
    out = []
    for t in suite.trials:
        version = done.get(t.config.trial_id)
        if t.skip:
            out.append((t, f"skip: {t.skip}"))
        elif version == MEASUREMENT_VERSION:
            out.append((t, "done"))
        elif version is not None:
            out.append((t, f"run: recorded by measurement version {version}, now {MEASUREMENT_VERSION}"))
        else:
            out.append((t, "run"))
    return out


def describe(t: Trial) -> str:
    c = t.config
    opts = "".join(f" | {k}={v}" for k, v in sorted(c.options.items()))
    nodes = f" | nnodes={c.nnodes}" if c.nnodes > 1 else ""
    net = f" | network={c.network}" if c.network else ""
    return f"{c.strategy} | {c.model} | {c.workload} | {c.device} | ws={c.world_size}{nodes}{net}{opts}"


def print_plan(entries: list[tuple[Trial, str]]) -> None:
    width = max((len(describe(t)) for t, _ in entries), default=0)
    for t, action in entries:
        print(f"{t.config.trial_id}  {describe(t):<{width}}  {action}")
    counts = Counter(a.split(":")[0] for _, a in entries)
    print(f"{len(entries)} trials: {counts['run']} to run, {counts['done']} already done, {counts['skip']} skipped")


def run_sweep(
    suite: Suite,
    results_root: Path,
    *,
    force: bool = False,
    progress: bool = True,
    executor: Executor | None = None,
    launch_method: str = DEFAULT_START_METHOD,
    placement: Placement | None = None,
    round_seed: int | None = None,
) -> SweepOutcome:
    """Run what `plan` says to run on `executor` (default: here, one trial after another), writing
    each row as its trial finishes; skipped trials are recorded first.

    A trial of several launches (`repeats`) is run in rounds: round r launches every trial
    that still needs a launch once, in the order `random.Random(round_seed + r)` shuffles
    them, so drift and load spread over all of them; its row is rewritten after each of its
    launches (`repeat_stop = "unfinished"` until the last), so a killed sweep keeps them.
    Between launches the local executor times a reference workload (`bench.runner.noise`);
    every row of the run gets the run's noise columns.

    Across real nodes (`placement`) every node runs this, and only the node holding global
    rank 0 writes rows. Nothing is skipped as done there: every node must launch the same
    trials, and the other nodes cannot see node 0's results; repeats are refused there."""
    results_dir = results_root / suite.name
    entries = plan(suite, results_dir, force or placement is not None)
    run_id = new_run_id()
    writer = RunWriter(results_dir, run_id)
    outcome = SweepOutcome(run_id, None)
    todo = [(t, a) for t, a in entries if a != "done"]
    outcome.cached = len(entries) - len(todo)
    bar = tqdm(total=len(todo), desc=suite.name, unit="trial", disable=not progress, file=sys.stderr, dynamic_ncols=True)

    def record(trial: Trial, row: dict[str, Any] | None, comm: list[dict[str, Any]], final: bool = True) -> None:
        if final:
            bar.update(1)
        if row is None:  # a node without global rank 0: that node writes the row
            outcome.counts["ran (row written by the node holding rank 0)"] += 1
            return
        writer.put(row, comm)
        if not final:
            return
        outcome.counts[row["status"]] += 1
        if row["status"] == "failed":
            first = (row["error"] or "").strip().splitlines()[-1:] or [""]
            tqdm.write(f"FAILED {describe(trial)}: {first[0]}", file=sys.stderr)

    jobs = []
    for trial, action in todo:
        if action.startswith("skip"):
            record(trial, skipped_row(base_row(trial.config, run_id, trial.composition.params()), trial.skip or ""), [])
        else:
            launch = {"launch_method": launch_method, "placement": placement}
            jobs.append(TrialJob(trial, results_dir / "logs" / run_id / trial.config.trial_id, launch))
    several = [j for j in jobs if j.trial.config.repeats != 1]
    if several and placement is not None:
        raise BenchError(f"repeats across real nodes (--nnodes) is not supported: trial {several[0].trial.config.trial_id} "
                         f"has repeats = {several[0].trial.config.repeats!r}")  # fmt: skip
    executor = executor or LocalExecutor()
    # Only the local executor runs nothing between its launches: elsewhere the reference would time the sweep's own trials.
    meter = NoiseMeter() if type(executor) is LocalExecutor else None

    def sample_noise() -> None:
        # Every row so far gets the noise measured so far: a killed sweep keeps it too.
        meter.sample()
        writer.update_all(*meter.columns())

    seed = round_seed if round_seed is not None else random.SystemRandom().randrange(2**31)
    _run_rounds(jobs, executor, run_id, results_dir, bar, record, sample_noise if meter else None, seed if several else None)
    if meter is not None:
        sample_noise()
    else:
        writer.update_all({}, {c: f"the reference workload runs only between launches of the local executor, not under "
                               f"{executor.name}{' --pack' if isinstance(executor, PackingExecutor) else ''}"
                               for c in NOISE_COLUMNS})  # fmt: skip
    bar.close()
    outcome.results_path = writer.trials_path if writer.rows else None
    return outcome


NOISE_COLUMNS = ("noise_ref_cv", "noise_foreign_cores", "load_avg_1m", "noisy")
REFERENCE_EVERY = 4  # launches between two reference bursts


def _run_rounds(
    jobs: list[TrialJob],
    executor: Executor,
    run_id: str,
    results_dir: Path,
    bar: Any,
    record: Any,
    sample_noise: Callable[[], None] | None,
    seed: int | None,
) -> None:
    """Launch every job until its `Repeats` rule stops it: one round after another (shuffled by
    `seed + round` when any trial has repeats; in suite order otherwise)."""
    rules = {j.trial.config.trial_id: Repeats.of(j.trial.config) for j in jobs}
    launches: dict[str, list[Launch]] = {tid: [] for tid in rules}
    pending = list(jobs)
    since_reference = 0
    if sample_noise is not None and pending:
        sample_noise()
    rnd = 0
    while pending:
        order = list(pending)
        if seed is not None:
            random.Random(seed + rnd).shuffle(order)
        multi = seed is not None
        round_jobs = [replace(j, log_dir=j.log_dir / f"launch-{len(launches[j.trial.config.trial_id])}") if multi else j
                      for j in order]  # fmt: skip
        finished = set()
        for job, (row, comm) in executor.run(round_jobs, run_id, results_dir / "logs" / run_id, lambda t: bar.set_postfix_str(describe(t))):
            tid = job.trial.config.trial_id
            if row is None:  # another node's row: nothing to combine
                finished.add(tid)
                record(job.trial, None, comm)
                continue
            rule = rules[tid]
            launches[tid].append(Launch(row, comm, rnd))
            stop = rule.add(row.get("latency_p50_s"), float(row.get("trial_wall_s") or 0.0)) if row["status"] == "ok" else row["status"]
            if stop is not None:
                rule.stop = rule.stop or stop
                finished.add(tid)
            combined, comm_rows = combine(launches[tid], rule, seed, str(job.log_dir.parent) if multi else None)
            record(job.trial, combined, comm_rows, final=stop is not None)
            since_reference += 1
            if sample_noise is not None and since_reference >= REFERENCE_EVERY:
                sample_noise()
                since_reference = 0
        pending = [j for j in pending if j.trial.config.trial_id not in finished]
        if sample_noise is not None and pending and since_reference:
            sample_noise()
            since_reference = 0
        rnd += 1

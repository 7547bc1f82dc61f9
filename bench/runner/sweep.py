"""Run a suite: expand it, skip what is already done, run each trial, write rows as they finish."""

from __future__ import annotations

import secrets
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench.contracts import MEASUREMENT_VERSION
from bench.distributed.forkserver import DEFAULT_START_METHOD
from bench.distributed.launch import Placement
from bench.runner.executors import Executor, LocalExecutor, TrialJob
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
) -> SweepOutcome:
    """Run what `plan` says to run on `executor` (default: here, one trial after another), writing
    each row as its trial finishes; skipped trials are recorded first.

    Across real nodes (`placement`) every node runs this, and only the node holding global
    rank 0 writes rows. Nothing is skipped as done there: every node must launch the same
    trials, and the other nodes cannot see node 0's results."""
    results_dir = results_root / suite.name
    entries = plan(suite, results_dir, force or placement is not None)
    run_id = new_run_id()
    writer = RunWriter(results_dir, run_id)
    outcome = SweepOutcome(run_id, None)
    todo = [(t, a) for t, a in entries if a != "done"]
    outcome.cached = len(entries) - len(todo)
    bar = tqdm(total=len(todo), desc=suite.name, unit="trial", disable=not progress, file=sys.stderr, dynamic_ncols=True)

    def record(trial: Trial, row: dict[str, Any] | None, comm: list[dict[str, Any]]) -> None:
        bar.update(1)
        if row is None:  # a node without global rank 0: that node writes the row
            outcome.counts["ran (row written by the node holding rank 0)"] += 1
            return
        writer.add(row, comm)
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
    executor = executor or LocalExecutor()
    for job, (row, comm) in executor.run(jobs, run_id, results_dir / "logs" / run_id, lambda t: bar.set_postfix_str(describe(t))):
        record(job.trial, row, comm)
    bar.close()
    outcome.results_path = writer.trials_path if writer.rows else None
    return outcome

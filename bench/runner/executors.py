"""Where a sweep's trials run: here, one after another (`local`), or as cluster jobs through submitit.

- `local`: each trial is launched from this process in turn (what `commbench sweep` always did);
- `slurm`: one Slurm job per trial through `submitit.SlurmExecutor` (sbatch); each job runs
  `run_trial` for its trial on the node it gets and returns the rows, and this process writes
  them as jobs finish, so a sweep's results and resume work as with `local`;
- `submitit-local`: the same code path with submitit's `LocalExecutor` (each job a subprocess of
  this machine): for tests and for trying a cluster set-up without a cluster.

A job that dies (killed, out of time, its process gone) still gives the trial a `failed` row,
`error_class = "job"`, with the job's stderr tail.
"""

from __future__ import annotations

import math
import shutil
import tomllib
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.contracts import TrialConfig
from bench.errors import BenchError
from bench.runner.suite import Trial
from bench.runner.trial import base_row, failed_row, run_trial

Rows = tuple[dict[str, Any], list[dict[str, Any]]]
RunTrial = Callable[[TrialConfig, str, list[dict[str, Any]], Path], Rows]
NAMES = ("local", "slurm", "submitit-local")
# submitit's LocalExecutor ignores unknown keys silently; these are the ones it reads.
_LOCAL_JOB_KEYS = frozenset({"timeout_min", "gpus_per_node", "visible_gpus", "tasks_per_node", "signal_delay_s", "setup"})
JOB_MARGIN_MIN = 5  # a job's time limit: the trial's timeout_s plus this, for start-up and writing the result
STDERR_LINES = 40


@dataclass(frozen=True)
class TrialJob:
    """One trial to run, and where its ranks' logs go."""

    trial: Trial
    log_dir: Path
    # How its ranks start (`run_trial`'s keyword arguments: launch_method, placement).
    launch: dict[str, Any] = field(default_factory=dict)


class Executor(ABC):
    name: str

    @abstractmethod
    def run(
        self, jobs: list[TrialJob], run_id: str, work_dir: Path, started: Callable[[Trial], None]
    ) -> Iterator[tuple[TrialJob, Rows]]:
        """Run every job; yield each with its (trial row, per-collective rows) as it finishes."""


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, run: RunTrial = run_trial) -> None:
        self._run = run

    def run(
        self, jobs: list[TrialJob], run_id: str, work_dir: Path, started: Callable[[Trial], None]
    ) -> Iterator[tuple[TrialJob, Rows]]:
        for job in jobs:
            started(job.trial)
            yield job, self._run(job.trial.config, run_id, job.trial.composition.params(), job.log_dir, **job.launch)


class SubmititExecutor(Executor):
    """One submitit job per trial; rows come back as jobs complete, in completion order."""

    def __init__(self, name: str, options: dict[str, Any], run: RunTrial = run_trial, poll_s: float | None = None) -> None:
        self.name = name
        self.options = options
        self._run = run
        self.poll_s = poll_s if poll_s is not None else (1.0 if name == "submitit-local" else 10.0)

    def _executor(self, folder: Path) -> Any:
        import submitit

        if self.name == "slurm":
            return submitit.SlurmExecutor(folder=folder)
        return submitit.LocalExecutor(folder=folder)

    def _parameters(self, cfg: TrialConfig) -> dict[str, Any]:
        minutes = math.ceil(cfg.timeout_s / 60) + JOB_MARGIN_MIN
        gpus = {"gpus_per_node": cfg.world_size} if cfg.device == "cuda" else {}
        if self.name == "slurm":  # one task on one node: the trial's launcher starts its ranks itself
            defaults = {"time": minutes, "nodes": 1, "ntasks_per_node": 1, "job_name": f"commbench-{cfg.trial_id}", **gpus}
        else:
            defaults = {"timeout_min": minutes, "tasks_per_node": 1, **gpus}
        return {**defaults, **self.options}

    def run(
        self, jobs: list[TrialJob], run_id: str, work_dir: Path, started: Callable[[Trial], None]
    ) -> Iterator[tuple[TrialJob, Rows]]:
        import submitit

        if not jobs:
            return
        executor = self._executor(work_dir / "submitit")
        submitted = {}
        for job in jobs:
            cfg = job.trial.config
            executor.update_parameters(**self._parameters(cfg))
            handle = executor.submit(self._run, cfg, run_id, job.trial.composition.params(), job.log_dir, **job.launch)
            submitted[handle.job_id] = (job, handle)
            started(job.trial)
        for handle in submitit.helpers.as_completed([h for _, h in submitted.values()], poll_frequency=self.poll_s):
            job = submitted[handle.job_id][0]
            try:
                yield job, handle.result()
            except Exception as exc:  # the job died or raised outside the trial: still a row
                yield job, _job_failed_row(job, run_id, handle, exc)


def _job_failed_row(job: TrialJob, run_id: str, handle: Any, exc: Exception) -> dict[str, Any]:
    cfg = job.trial.config
    base = base_row(cfg, run_id, job.trial.composition.params())
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    row = failed_row(base, f"job {handle.job_id} failed: {text[-4000:]}", error_class="job")
    stderr = handle.stderr()
    if stderr:
        row["stderr_tail"] = "\n".join(stderr.strip().splitlines()[-STDERR_LINES:])
    row["log_dir"] = str(handle.paths.folder)
    return row, []


def _value(text: str) -> Any:
    """`60` -> 60, `1.5` -> 1.5, `true` -> True, `[0, 1]` -> [0, 1]; anything else stays a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_options(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise BenchError(f"--executor-opt {item!r}: expected key=value")
        out[key] = _value(value)
    return out


def make(name: str, items: list[str]) -> Executor:
    """The executor `name` with its `key=value` options, checked before anything is submitted."""
    options = parse_options(items)
    if name == "local":
        if options:
            raise BenchError(f"the local executor takes no --executor-opt (got {', '.join(options)})")
        return LocalExecutor()
    if name not in NAMES:
        raise BenchError(f"unknown executor {name!r}; valid: {', '.join(NAMES)}")
    try:
        import submitit
    except ImportError:
        raise BenchError(f"the {name} executor needs submitit (pip install submitit)") from None
    valid = submitit.SlurmExecutor._valid_parameters() if name == "slurm" else _LOCAL_JOB_KEYS
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise BenchError(f"unknown --executor-opt for {name}: {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    if name == "slurm" and shutil.which("sbatch") is None:
        raise BenchError("the slurm executor submits with sbatch, which is not on PATH (run it on a Slurm login node)")
    return SubmititExecutor(name, options)

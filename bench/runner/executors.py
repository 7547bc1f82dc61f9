"""Where a sweep's trials run: here, one after another (`local`), or as cluster jobs through submitit.

- `local`: each trial is launched from this process in turn (what `commbench sweep` always did);
- `slurm`: one Slurm job per trial through `submitit.SlurmExecutor` (sbatch); each job runs
  `run_trial` for its trial on the node it gets and returns the rows, and this process writes
  them as jobs finish, so a sweep's results and resume work as with `local`;
- `submitit-local`: the same code path with submitit's `LocalExecutor` (each job a subprocess of
  this machine): for tests and for trying a cluster set-up without a cluster;
- `PackingExecutor` (`commbench sweep --pack`): here, but trials that fit side by side
  (`bench.runner.packing`) run concurrently, each in its own process on its own cores.

A job that dies (killed, out of time, its process gone) still gives the trial a `failed` row,
`error_class = "job"`, with the job's stderr tail.
"""

from __future__ import annotations

import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.contracts import TrialConfig
from bench.distributed.env import CPUSET_ENV
from bench.errors import BenchError
from bench.runner import packing
from bench.runner.suite import Trial
from bench.runner.trial import base_row, failed_row, packed_columns, run_trial

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


PACK_RESERVE_ENV = "COMMBENCH_PACK_RESERVE"  # for tests only: cores kept back for the launchers
READY_TIMEOUT_S = 600.0  # a wave's processes get this long to import and start their fork servers


def demand(cfg: TrialConfig, cores: int) -> packing.Demand:
    """The cores (ranks x threads) and GPUs `cfg` takes on a machine of `cores` cores.

    Trials across nodes or emulated networks take the whole machine: they never share it.
    """
    if cfg.nnodes > 1 or cfg.network is not None:
        return packing.Demand(cfg.trial_id, cores)
    threads = cfg.threads_per_rank or max(1, cores // cfg.world_size)  # `threads_for` on these cores
    return packing.Demand(cfg.trial_id, cfg.world_size * threads, cfg.world_size if cfg.device == "cuda" else 0)


def _machine_cores() -> list[int]:
    """The cores this process may run on."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def _visible_gpus() -> list[str]:
    """The GPUs this process sees, as `CUDA_VISIBLE_DEVICES` entries."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in (v.strip() for v in visible.split(",")) if g]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


class PackingExecutor(Executor):
    """Here, wave after wave: a wave's trials run at once, each in its own process
    (`python -m bench.runner.packed_trial`) on its slot's cores and GPUs; a trial alone in
    its wave runs in this process, as under `local`. Rows come back in completion order.
    """

    name = "local"

    def __init__(
        self, run: RunTrial = run_trial, *, cores: list[int] | None = None, reserve: int | None = None, poll_s: float = 0.05
    ) -> None:
        self._run = run
        self.cores = cores if cores is not None else _machine_cores()
        env_reserve = os.environ.get(PACK_RESERVE_ENV)
        self.reserve = reserve if reserve is not None else (int(env_reserve) if env_reserve else packing.RESERVED_CORES)
        self.poll_s = poll_s

    def plan(self, configs: list[TrialConfig]) -> list[packing.Wave]:
        if len({c.trial_id for c in configs}) < len(configs):
            raise BenchError("--pack needs distinct trials: the suite repeats one")
        gpus = _visible_gpus() if any(c.device == "cuda" for c in configs) else []
        demands = [demand(c, len(self.cores)) for c in configs]
        try:
            return packing.plan(demands, self.cores, list(range(len(gpus))), reserve=self.reserve)
        except ValueError as exc:
            raise BenchError(str(exc)) from None

    def summary(self, waves: list[packing.Wave]) -> str:
        trials = sum(len(w.slots) for w in waves)
        beside = sum(len(w.slots) for w in waves if len(w.slots) > 1)
        if trials and not beside:
            return (f"packing: no two trials fit side by side on {len(self.cores)} cores ({self.reserve} kept for the "
                    f"launchers; a trial takes ranks x threads_per_rank cores): running them one after another")  # fmt: skip
        return f"packing: {trials} trials in {len(waves)} waves, {beside} of them beside another trial"

    def run(
        self, jobs: list[TrialJob], run_id: str, work_dir: Path, started: Callable[[Trial], None]
    ) -> Iterator[tuple[TrialJob, Rows]]:
        waves = self.plan([j.trial.config for j in jobs])
        print(self.summary(waves), file=sys.stderr)
        by_id = {j.trial.config.trial_id: j for j in jobs}
        gpus = _visible_gpus() if any(s.gpus for w in waves for s in w.slots) else []
        for wave in waves:
            if len(wave.slots) == 1:
                job = by_id[wave.slots[0].trial_id]
                started(job.trial)
                yield job, self._run(job.trial.config, run_id, job.trial.composition.params(), job.log_dir, **job.launch)
            else:
                yield from self._run_wave(wave, by_id, run_id, work_dir / "packed", gpus, started)

    def _run_wave(
        self, wave: packing.Wave, by_id: dict[str, TrialJob], run_id: str, root: Path, gpus: list[str],
        started: Callable[[Trial], None],
    ) -> Iterator[tuple[TrialJob, Rows]]:  # fmt: skip
        children: dict[str, tuple[TrialJob, subprocess.Popen[bytes], Path]] = {}
        try:
            for slot in wave.slots:
                job = by_id[slot.trial_id]
                folder = root / slot.trial_id
                folder.mkdir(parents=True, exist_ok=True)
                spec = {"config": job.trial.config, "run_id": run_id, "params": job.trial.composition.params(),
                        "log_dir": job.log_dir, "launch": job.launch, "packed_with": wave.beside(slot.trial_id)}  # fmt: skip
                (folder / "job.pkl").write_bytes(pickle.dumps(spec))
                env = {**os.environ, CPUSET_ENV: packing.cpuset(slot.cores)}
                if slot.gpus:
                    env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[g] for g in slot.gpus)
                with open(folder / "child.log", "wb") as log:
                    proc = subprocess.Popen([sys.executable, "-m", "bench.runner.packed_trial", str(folder)], env=env,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
                children[slot.trial_id] = (job, proc, folder)
            # Start the trials together: each child signals `ready` once it has imported
            # everything, so one's start-up does not run beside the other's measurement.
            deadline = time.monotonic() + READY_TIMEOUT_S
            while time.monotonic() < deadline and not all(
                (f / "ready").exists() or p.poll() is not None for _, p, f in children.values()
            ):
                time.sleep(self.poll_s)
            for job, _, folder in children.values():
                (folder / "go").touch()
                started(job.trial)
            limits = {
                tid: time.monotonic() + job.trial.config.timeout_s + 60 * JOB_MARGIN_MIN for tid, (job, _, _) in children.items()
            }
            pending = dict(children)
            while pending:
                for tid, (job, proc, folder) in list(pending.items()):
                    if proc.poll() is None and time.monotonic() < limits[tid]:
                        continue
                    overran = proc.poll() is None
                    if overran:
                        _kill(proc)
                    del pending[tid]
                    yield job, _child_rows(job, run_id, proc, folder, wave.beside(tid), overran=overran)
                time.sleep(self.poll_s)
        finally:
            for _, proc, _ in children.values():
                if proc.poll() is None:
                    _kill(proc)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """End a wave's child and the ranks it started (its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _child_rows(
    job: TrialJob, run_id: str, proc: subprocess.Popen[bytes], folder: Path, beside: list[str], *, overran: bool = False
) -> Rows:
    """The rows a wave's child wrote, or a `failed` row (`error_class = "job"`) when it wrote none."""
    out = folder / "rows.pkl"
    if proc.returncode == 0 and out.exists():
        return pickle.loads(out.read_bytes())
    cfg = job.trial.config
    base = {**base_row(cfg, run_id, job.trial.composition.params()), **packed_columns(cfg, beside)}
    how = (
        f"was killed after timeout_s + {JOB_MARGIN_MIN} min"
        if overran
        else f"was killed by signal {-proc.returncode}"
        if proc.returncode < 0
        else f"exited with code {proc.returncode}"
    )
    row = failed_row(base, f"packed trial process {how} without writing its rows", error_class="job")
    log = (folder / "child.log").read_text(errors="replace").strip()
    if log:
        row["stderr_tail"] = "\n".join(log.splitlines()[-STDERR_LINES:])
    row["log_dir"] = str(folder)
    return row, []


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

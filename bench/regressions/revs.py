"""Same-job A/B of two git revisions: benchmark them interleaved (A B A B ...) so machine drift cancels.

Each revision is checked out in its own `git worktree` (detached, in a temporary directory) and its
sweeps run with the same Python (the same venv): `PYTHONPATH` puts the worktree's `bench` package
first, and every stored row's `git_sha` is checked against the revision, so a run of the wrong code
is an error, not a comparison. Both revisions run the same suite file (this checkout's, unless a
path is given), so their trials match by history key. Rounds alternate A, B, A, B: a machine that
slows down during the job slows both sides alike. The two sides are then compared with
bench.compare (samples of all rounds pooled per trial).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.compare.regression import DEFAULT_ALPHA, Comparison, compare
from bench.compare.thresholds import Threshold
from bench.errors import BenchError
from bench.runner.sweep import new_run_id
from bench.storage.parquet import read_results
from bench.system import REPO_ROOT


@dataclass(frozen=True, slots=True)
class Rev:
    label: str  # "A" or "B"
    name: str  # as given, e.g. "main" or "HEAD~3"
    sha: str


@dataclass(frozen=True, slots=True)
class RevsOutcome:
    a: Rev
    b: Rev
    results: Path  # this job's results: A/ and B/
    runs: tuple[tuple[str, str], ...]  # (label, run id) in the order they ran
    comparison: Comparison


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"git {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


def resolve(repo: Path, label: str, name: str) -> Rev:
    return Rev(label, name, _git(repo, "rev-parse", "--verify", f"{name}^{{commit}}"))


@contextmanager
def worktrees(repo: Path, revs: Sequence[Rev]) -> Iterator[dict[str, Path]]:
    """A detached worktree per revision in a temporary directory, removed (and pruned) afterwards."""
    with tempfile.TemporaryDirectory(prefix="commbench-revs-") as tmp:
        paths: dict[str, Path] = {}
        try:
            for rev in revs:
                path = Path(tmp) / rev.label
                _git(repo, "worktree", "add", "--detach", "--quiet", str(path), rev.sha)
                paths[rev.label] = path
            yield paths
        finally:
            for path in paths.values():
                subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(path)], capture_output=True)
            subprocess.run(["git", "-C", str(repo), "worktree", "prune"], capture_output=True)


def sweep(rev: Rev, worktree: Path, suite: Path, results: Path, python: str) -> str:
    """One sweep of `suite` with `rev`'s code; returns its run id after checking its rows are `rev`'s."""
    before = {f.name for f in results.rglob("*.parquet")} if results.exists() else set()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(worktree), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    cmd = [python, "-m", "bench", "sweep", str(suite), "--results", str(results), "--force", "--no-report", "--no-progress"]
    print(f"compare-revs: {rev.label} = {rev.name} ({rev.sha[:10]}): {' '.join(cmd[1:])}", flush=True)
    done = subprocess.run(cmd, cwd=worktree, env=env)
    if done.returncode not in (0, 1):  # 1: some trial failed, which the comparison reports
        raise BenchError(f"the sweep of {rev.label} = {rev.name} exited {done.returncode}")
    new = sorted(f for f in results.rglob("*.parquet") if f.name not in before and not f.name.endswith(".comm.parquet"))
    if len(new) != 1:
        raise BenchError(f"the sweep of {rev.label} = {rev.name} wrote {len(new)} results files, expected 1")
    rows = read_results(new)
    shas = set(rows["git_sha"].dropna())
    if shas != {rev.sha}:
        raise BenchError(f"rows of {rev.label} = {rev.name} were measured at {sorted(shas) or 'no commit'}, not {rev.sha}: "
                         "the worktree's code did not run")  # fmt: skip
    return str(rows["run_id"].iloc[0])


def compare_revs(
    a: str,
    b: str,
    suite: Path,
    results: Path,
    *,
    rounds: int = 3,
    thresholds: Sequence[Threshold] = (),
    alpha: float = DEFAULT_ALPHA,
    repo: Path = REPO_ROOT,
    python: str = sys.executable,
) -> RevsOutcome:
    """Run `suite` for revisions `a` and `b` alternately `rounds` times each, then compare B against A.

    Results go to a fresh directory under `results` (never pooled with an earlier job's runs).
    """
    if rounds < 1:
        raise BenchError(f"rounds must be >= 1, got {rounds}")
    suite = suite.resolve()
    revs = (resolve(repo, "A", a), resolve(repo, "B", b))
    job = results / f"{new_run_id()}-{revs[0].sha[:7]}-{revs[1].sha[:7]}"
    runs: list[tuple[str, str]] = []
    with worktrees(repo, revs) as paths:
        for _ in range(rounds):
            for rev in revs:
                runs.append((rev.label, sweep(rev, paths[rev.label], suite, job / rev.label, python)))
    comparison = compare(read_results([job / "A"]), read_results([job / "B"]), thresholds, alpha=alpha)
    return RevsOutcome(revs[0], revs[1], job, tuple(runs), comparison)

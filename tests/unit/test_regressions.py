"""Nightly tracking on a stored history (last good run, regressions, accept) and a real same-job A/B of two revisions."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.regressions.nightly import judge_run, last_good_run
from bench.storage.parquet import read_results
from bench.system import REPO_ROOT
from tests.unit.report_fixtures import GRAD_BYTES, nightly_runs, train_bytes, trial

TINY_SUITE = """
name = "tiny"
[matrix]
strategies = ["baseline"]
workloads = ["collectives"]
world_sizes = [1]
"options.op" = ["all_reduce"]
"options.size_bytes" = [65536]
[settings]
steps = 5
warmup_steps = 1
profile_steps = 0
"""


def test_each_nightly_is_compared_with_the_last_good_run(tmp_path: Path) -> None:
    history, out = tmp_path / "history", tmp_path / "out"
    runs = nightly_runs(np.random.default_rng(7), n=7, step_at=3)  # fp16_compress 30% slower from run 3 on
    passed, bases = [], []
    for i, run in enumerate(runs):
        run.write(history)
        verdict = judge_run(history / "nightly", run.run_id, out, accept=(i == 5), report=(i == len(runs) - 1))
        passed.append(verdict.passed)
        bases.append(verdict.baseline_run_id)
    ids = [r.run_id for r in runs]
    assert passed == [True, True, True, False, False, True, True]
    # Run 4 is still compared with run 2, the last good one, not with the regressed run 3; run 5 was accepted.
    assert bases == [None, ids[0], ids[1], ids[2], ids[2], ids[2], ids[5]]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run_id"] == ids[6] and summary["passed"] is True and summary["baseline_run_id"] == ids[5]
    stored = json.loads((history / "nightly" / f"{ids[3]}.nightly.json").read_text())
    assert stored["passed"] is False and len(stored["regressions"]) == 1
    assert stored["regressions"][0].startswith("worse") and "fp16_compress bert-tiny" in stored["regressions"][0]
    assert "latency_p50" in stored["regressions"][0]
    report = (out / "index.html").read_text()
    assert 'id="history"' in report and "REGRESSION" in report


def test_a_failed_trial_fails_the_nightly_and_never_becomes_the_baseline(tmp_path: Path) -> None:
    history, out = tmp_path / "history", tmp_path / "out"
    good, broken, later = nightly_runs(np.random.default_rng(8), n=3, step_at=99)
    trial(broken, "powersgd", "bert-tiny", rng=np.random.default_rng(9), status="failed", error="RuntimeError: boom")
    for run in (good, broken, later):
        run.write(history)
    df = read_results([history])
    assert last_good_run(history / "nightly", df, later.run_id) == good.run_id  # no verdict files: no failure = good
    assert not judge_run(history / "nightly", broken.run_id, out, report=False).passed
    assert judge_run(history / "nightly", later.run_id, out, report=False).baseline_run_id == good.run_id


def test_a_byte_change_is_a_regression_however_small(tmp_path: Path) -> None:
    history, out = tmp_path / "history", tmp_path / "out"
    base, cand = nightly_runs(np.random.default_rng(10), n=2, step_at=99)
    rng = np.random.default_rng(11)
    cand.rows.clear()
    cand.comm.clear()
    train_bytes(trial(cand, "baseline", "bert-tiny", rng=rng, latency_s=0.110, eval_loss=5.9), cand, GRAD_BYTES)
    train_bytes(trial(cand, "fp16_compress", "bert-tiny", rng=rng, latency_s=0.080, eval_loss=5.9), cand, GRAD_BYTES / 2 + 1)
    base.write(history)
    cand.write(history)
    verdict = judge_run(history / "nightly", cand.run_id, out, report=False)
    assert not verdict.passed and any("comm_logical_bytes_per_step" in r for r in verdict.regressions)


@pytest.fixture
def tiny_suite(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_SUITE)
    return path


def test_nightly_command_runs_the_suite_into_the_history(tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    history, out = tmp_path / "history", tmp_path / "out"
    assert main(["nightly", str(tiny_suite), "--history", str(history), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "PASSED" in printed and "no earlier good run" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"ok": 1} and summary["comparison"] is None
    assert len(list((history / "tiny").glob("*.nightly.json"))) == 1 and (out / "index.html").exists()


needs_git = pytest.mark.skipif(shutil.which("git") is None or not (REPO_ROOT / ".git").exists(), reason="needs a git checkout")


@pytest.fixture
def clone(tmp_path: Path) -> tuple[Path, str, str]:
    """A private clone (worktrees come and go there, never in this checkout) with one more, empty commit.

    Returns the clone, its first HEAD (A) and the new commit (B): the same code under two commits.
    """
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "--quiet", "--shared", str(REPO_ROOT), str(repo)], check=True)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    a = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([*git, "commit", "--quiet", "--allow-empty", "-m", "B"], check=True)
    b = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    return repo, a, b


def worktree_count(repo: Path) -> int:
    listed = subprocess.run(["git", "-C", str(repo), "worktree", "list"], capture_output=True, text=True, check=True).stdout
    return len(listed.strip().splitlines())


@needs_git
def test_compare_revs_benchmarks_each_revision_from_its_own_worktree(
    clone: tuple[Path, str, str], tiny_suite: Path, tmp_path: Path
) -> None:
    from bench.regressions.revs import compare_revs

    repo, a, b = clone
    outcome = compare_revs(a, "HEAD", tiny_suite, tmp_path / "revs", rounds=1, repo=repo)
    assert (outcome.a.sha, outcome.b.sha) == (a, b) and [label for label, _ in outcome.runs] == ["A", "B"]
    a_rows, b_rows = read_results([outcome.results / "A"]), read_results([outcome.results / "B"])
    assert set(a_rows["git_sha"]) == {a} and set(b_rows["git_sha"]) == {b}  # each side ran its own checkout
    assert a_rows["started_at"].max() < b_rows["started_at"].min()
    assert outcome.comparison.findings and not outcome.comparison.unmatched  # the same trial on both sides
    assert worktree_count(repo) == 1  # the temporary worktrees are gone


@needs_git
def test_compare_revs_alternates_the_revisions_round_by_round(
    clone: tuple[Path, str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.regressions import revs

    repo, a, b = clone
    calls: list[tuple[str, str, bool]] = []

    def fake_sweep(rev: revs.Rev, worktree: Path, suite: Path, results: Path, python: str) -> str:
        head = subprocess.run(["git", "-C", str(worktree), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        calls.append((rev.label, rev.sha, head == rev.sha))
        return f"run{len(calls)}"

    monkeypatch.setattr(revs, "sweep", fake_sweep)
    monkeypatch.setattr(revs, "compare", lambda *args, **kwargs: None)
    monkeypatch.setattr(revs, "read_results", lambda paths: None)
    outcome = revs.compare_revs(a, b, tmp_path / "s.toml", tmp_path / "revs", rounds=3, repo=repo)
    assert [c[0] for c in calls] == ["A", "B", "A", "B", "A", "B"] and all(c[2] for c in calls)
    assert [r for _, r in outcome.runs] == [f"run{i}" for i in range(1, 7)]
    assert worktree_count(repo) == 1

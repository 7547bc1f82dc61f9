"""Resume after SIGKILL: kill the runner mid-sweep, rerun, and every trial has exactly one ok row; its ranks died with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bench.distributed.isolation import rank_pids
from bench.storage.parquet import read_results, trial_files
from tests.suites import one_step_suite

pytestmark = pytest.mark.multirank

ROOT = Path(__file__).resolve().parents[2]
SUITE = one_step_suite("killed", ["baseline", "fp16_compress"])
WAIT_S = 600  # a loaded 2-core machine takes up to ~30 s per trial


def _sweep(suite: Path, results: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "bench", "sweep", str(suite), "--results", str(results), "--no-report", "--no-progress"]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _rows(results: Path) -> list[str]:
    files = trial_files([results / "killed"]) if (results / "killed").exists() else []
    return list(read_results(files)["trial_id"]) if files else []


def _running_trial(results: Path, done: list[str]) -> dict[int, int] | None:
    """rank -> pid of a trial whose two ranks have started and which has no row yet."""
    for pids_dir in (results / "killed" / "logs").glob("*/*/pids"):
        if pids_dir.parent.name not in done and len(pids := rank_pids(pids_dir.parent)) == 2:
            return pids
    return None


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_sigkill_mid_sweep_then_rerun_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    suite, results = tmp_path / "killed.toml", tmp_path / "results"
    suite.write_text(SUITE)
    runner = _sweep(suite, results)
    deadline, ranks = time.monotonic() + WAIT_S, None
    while time.monotonic() < deadline and runner.poll() is None:
        done = _rows(results)
        if done and (ranks := _running_trial(results, done)):
            break
        time.sleep(0.2)
    assert ranks, f"no row followed by a running trial within {WAIT_S} s: {runner.poll()=}"
    runner.send_signal(signal.SIGKILL)  # no handler, no finally: only the kernel acts
    runner.wait()
    written = _rows(results)
    assert len(written) == 1  # the second trial was running: its row never came

    # The killed runner's ranks die with it (PR_SET_PDEATHSIG), rather than run on as orphans.
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in ranks.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in ranks.values() if _alive(p)]

    # What a SIGKILL in the middle of a write leaves: a partial temp file beside the results.
    run_file = trial_files([results / "killed"])[0]
    (run_file.parent / f".{run_file.name}.crashed.tmp").write_bytes(run_file.read_bytes()[:100])

    rerun = _sweep(suite, results)
    _, err = rerun.communicate(timeout=WAIT_S)
    assert rerun.returncode == 0, err.decode()[-3000:]
    df = read_results([results / "killed"])
    assert len(trial_files([results / "killed"])) == 2  # the killed run's file and the rerun's
    assert set(df["status"]) == {"ok"}
    counts = df["trial_id"].value_counts()
    assert len(counts) == 2 and set(counts) == {1}, counts  # every trial once: none lost, none twice
    assert list(df[df["run_id"] == run_file.stem]["trial_id"]) == written  # the killed run's row stands, as written

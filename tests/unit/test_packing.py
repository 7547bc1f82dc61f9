"""The packing planner: disjoint cores and GPUs, suite order kept, and no packing on a small machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.distributed.env import parse_cpuset
from bench.runner.packing import Demand, cpuset, plan


def _cores(waves: list) -> list[list[tuple[str, tuple[int, ...]]]]:
    return [[(s.trial_id, s.cores) for s in w.slots] for w in waves]


def test_two_cores_stay_sequential() -> None:
    # The default suite: threads default to cores // ranks, so every trial wants both cores.
    assert _cores(plan([Demand("a", 2), Demand("b", 2), Demand("c", 2)], [0, 1])) == [
        [("a", (0, 1))], [("b", (0, 1))], [("c", (0, 1))]
    ]  # fmt: skip
    # Even one-thread, one-rank trials: one core is kept for the launchers, one is left.
    assert [len(w.slots) for w in plan([Demand("a", 1), Demand("b", 1)], [0, 1])] == [1, 1]


def test_trials_share_a_big_machine_on_disjoint_cores_in_suite_order() -> None:
    waves = plan([Demand("a", 4), Demand("b", 2), Demand("c", 2), Demand("d", 8), Demand("e", 1)], list(range(10)))
    assert _cores(waves) == [
        [("a", (0, 1, 2, 3)), ("b", (4, 5)), ("c", (6, 7))],  # 9 usable cores: a+b+c = 8, d does not fit
        [("d", tuple(range(8))), ("e", (8,))],
    ]  # fmt: skip
    for w in waves:
        used = [c for s in w.slots for c in s.cores]
        assert len(used) == len(set(used)) and 9 not in used  # disjoint, and the reserved core stays free
    assert waves[0].beside("b") == ["a", "c"] and waves[1].beside("e") == ["d"]


def test_a_trial_bigger_than_the_packable_machine_runs_alone_on_all_of_it() -> None:
    waves = plan([Demand("a", 1), Demand("big", 16), Demand("b", 1)], list(range(4)))
    assert _cores(waves) == [[("a", (0,))], [("big", (0, 1, 2, 3))], [("b", (0,))]]


def test_gpus_are_disjoint_and_bound_a_wave() -> None:
    waves = plan([Demand("a", 2, gpus=2), Demand("b", 2, gpus=2), Demand("c", 2, gpus=2)], list(range(32)), gpus=[0, 1, 2, 3])
    assert [[(s.trial_id, s.gpus) for s in w.slots] for w in waves] == [[("a", (0, 1)), ("b", (2, 3))], [("c", (0, 1))]]
    with pytest.raises(ValueError, match="needs 8 GPUs"):
        plan([Demand("x", 1, gpus=8)], [0, 1], gpus=[0])


def test_cpuset_round_trips_and_pins_a_process_to_it() -> None:
    assert parse_cpuset(cpuset((4, 5, 7))) == {4, 5, 7} and parse_cpuset("0-2, 5") == {0, 1, 2, 5}
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform")
    core = max(os.sched_getaffinity(0))
    code = (
        "import os; os.environ.update(RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1', MASTER_PORT='0');"
        "from bench.distributed import env; os.environ[env.CPUSET_ENV] = '%d';"
        "import torch.distributed as dist; dist.init_process_group = lambda *a, **k: None;"
        "env.init_rank('cpu', 1); print(sorted(os.sched_getaffinity(0)))" % core
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == f"[{core}]"


def test_demands_follow_ranks_threads_and_devices() -> None:
    from bench.contracts import TrialConfig
    from bench.runner.executors import demand

    def cfg(**kw: object) -> TrialConfig:
        return TrialConfig(suite="s", strategy="baseline", model="gpt2-tiny", workload="train", **kw)  # type: ignore[arg-type]

    assert demand(cfg(world_size=2, threads_per_rank=3), 16) == Demand(cfg(world_size=2, threads_per_rank=3).trial_id, 6)
    assert demand(cfg(world_size=2), 16).cores == 16  # threads default to the machine shared by the ranks
    assert demand(cfg(world_size=4, threads_per_rank=1, device="cuda"), 64).gpus == 4
    assert demand(cfg(world_size=2, threads_per_rank=1, nnodes=2), 64).cores == 64  # across nodes: alone


def test_pack_says_it_stays_sequential_on_two_cores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench.cli import main
    from bench.runner.executors import PackingExecutor

    suite = tmp_path / "s.toml"
    suite.write_text('[matrix]\nstrategies = ["baseline"]\nmodels = ["none"]\nworkloads = ["collectives"]\n'
                     '"options.size_bytes" = [1024, 2048]\n[settings]\nthreads_per_rank = 1\n')  # fmt: skip
    assert main(["sweep", str(suite), "--pack", "--dry-run", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    cores = len(PackingExecutor().cores)
    if cores == 2:
        assert "packing: no two trials fit side by side on 2 cores (1 kept for the launchers" in out
    assert main(["sweep", str(suite), "--pack", "--executor", "submitit-local", "--results", str(tmp_path)]) == 2
    assert "--pack runs trials side by side on this machine" in capsys.readouterr().err


def test_a_wave_child_that_wrote_nothing_gives_a_failed_row(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from bench.contracts import TrialConfig
    from bench.runner.executors import TrialJob, _child_rows
    from bench.runner.suite import NO_MODEL, Trial
    from bench.strategies import parse

    cfg = TrialConfig(suite="s", strategy="baseline", model=NO_MODEL, workload="collectives")
    job = TrialJob(Trial(cfg, parse("baseline"), None), tmp_path / "logs")
    (tmp_path / "child.log").write_text("Traceback ...\nMemoryError\n")
    row, comm = _child_rows(job, "r", SimpleNamespace(returncode=-9), tmp_path, ["other"])  # type: ignore[arg-type]
    assert (row["status"], row["error_class"], comm) == ("failed", "job", [])
    assert "killed by signal 9" in row["error"] and row["stderr_tail"].endswith("MemoryError")
    assert row["packed_with"] == ["other"]
    row, _ = _child_rows(job, "r", SimpleNamespace(returncode=-9), tmp_path, [], overran=True)  # type: ignore[arg-type]
    assert "killed after timeout_s + 5 min" in row["error"] and row["packed_with"] == []

"""The packing planner: disjoint cores and GPUs, suite order kept, and no packing on a small machine."""

from __future__ import annotations

import os
import subprocess
import sys

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

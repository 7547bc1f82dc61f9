"""The elastic launcher wrapper: outputs by rank, root-cause failures, timeouts, a parent that sleeps."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from torch.distributed.elastic.multiprocessing.errors import record

from bench.distributed.launch import launch

pytestmark = pytest.mark.multirank


@record
def sleep_then_report(seconds: float) -> dict[str, object]:
    time.sleep(seconds)
    return {"rank": int(os.environ["RANK"]), "world": int(os.environ["WORLD_SIZE"]), "master": os.environ["MASTER_PORT"]}


@record
def fail_on_rank_one(_: object) -> dict[str, object]:
    if os.environ["RANK"] == "1":
        raise ValueError("rank one says no")
    time.sleep(30)  # the survivor must be torn down, not waited for
    return {}


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_ranks_get_the_torchrun_environment(tmp_path: Path, world_size: int) -> None:
    res = launch(sleep_then_report, 0.0, nprocs=world_size, log_dir=tmp_path, timeout_s=120)
    assert res.error is None
    assert [res.outputs[r]["rank"] for r in sorted(res.outputs)] == list(range(world_size))
    assert {o["world"] for o in res.outputs.values()} == {world_size}


def test_parent_blocks_instead_of_spinning(tmp_path: Path) -> None:
    # Not a timing assertion: a busy-polling parent burns about one core for the whole
    # 4 s the ranks sleep; a blocking one uses a few milliseconds beyond its start-up work.
    res = launch(sleep_then_report, 4.0, nprocs=2, log_dir=tmp_path, timeout_s=120)
    assert res.error is None and res.wall_s >= 4.0
    assert res.launcher_cpu_s < 0.25 * res.wall_s


def test_failure_returns_the_root_cause_traceback(tmp_path: Path) -> None:
    res = launch(fail_on_rank_one, None, nprocs=2, log_dir=tmp_path, timeout_s=120)
    assert res.failed_rank == 1
    assert "ValueError: rank one says no" in (res.error or "")
    assert res.wall_s < 30  # the other rank was killed, not waited for


def test_timeout_kills_the_ranks(tmp_path: Path) -> None:
    res = launch(sleep_then_report, 600.0, nprocs=2, log_dir=tmp_path, timeout_s=8)
    assert res.timed_out and "exceeded its timeout of 8 s" in (res.error or "")
    assert res.wall_s < 60



@pytest.mark.parametrize("recorder", [False, True])
def test_flight_recorder_cost_launch_has_the_recorder_it_asked_for(tmp_path: Path, recorder: bool) -> None:
    # The overhead benchmark's per-collective side: its "off" launches must really run
    # without the recorder (torch's default is on), and its "on" ones with it.
    from bench.benchmarks.overhead import _time_calls

    result = launch(_time_calls, {"recorder": recorder, "calls": 500}, nprocs=1, log_dir=tmp_path, timeout_s=120)
    assert result.error is None, result.error
    assert 0 < result.outputs[0] < 1e-2  # seconds per tiny one-rank all_reduce

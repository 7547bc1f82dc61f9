"""Per-rank environment: threads, core pinning and the thread-placement policy."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.contracts import TrialConfig
from bench.distributed import env as rank_env
from bench.distributed.env import _core_list, init_rank, pin_cores, thread_cores, threads_for

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no sched_setaffinity here")


@pytest.fixture
def affinity() -> Iterator[list[int]]:
    saved = os.sched_getaffinity(0)
    yield sorted(saved)
    os.sched_setaffinity(0, saved)


def test_each_rank_gets_its_own_slice_of_the_cores(affinity: list[int]) -> None:
    n = len(affinity)
    slices = []
    for rank in range(n):
        os.sched_setaffinity(0, affinity)  # each rank starts from the launcher's full set
        slices.append(pin_cores(rank, n))
        assert sorted(os.sched_getaffinity(0)) == slices[-1]
    assert slices == [[c] for c in affinity]  # disjoint, one core each, covering the set


def test_more_ranks_than_cores_pins_nothing(affinity: list[int]) -> None:
    assert pin_cores(0, len(affinity) + 1) is None
    assert sorted(os.sched_getaffinity(0)) == affinity


def test_threads_share_the_cores_evenly() -> None:
    cores = len(os.sched_getaffinity(0))
    assert threads_for(1, None) == cores
    assert threads_for(cores + 1, None) == 1
    assert threads_for(2, 3) == 3  # an explicit request wins


def test_core_list_reads_the_kernels_format() -> None:
    assert _core_list("0-2,5,7-8") == [0, 1, 2, 5, 7, 8]
    assert _core_list("3") == [3]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="no /proc/self/task")
def test_thread_cores_reads_each_threads_own_mask(affinity: list[int]) -> None:
    """A thread started while the caller was pinned keeps that core after the caller is unpinned."""
    os.sched_setaffinity(0, affinity[:1])
    ready, done = threading.Event(), threading.Event()

    def child() -> None:
        Path(f"/proc/self/task/{threading.get_native_id()}/comm").write_text("pin-probe")
        ready.set()
        done.wait()

    t = threading.Thread(target=child)
    t.start()
    try:
        ready.wait()
        os.sched_setaffinity(0, affinity)
        got = thread_cores()
        assert got is not None
        assert got["compute"] == affinity and got["pin-probe"] == affinity[:1]
    finally:
        done.set()
        t.join()


@pytest.mark.parametrize(
    ("pin", "order"),
    [
        ("compute", ["init_process_group", "pin", "set_num_threads"]),  # gloo's threads start unpinned
        ("all", ["pin", "init_process_group", "set_num_threads"]),  # gloo's threads inherit the core
        ("none", ["init_process_group", "set_num_threads"]),
    ],
)
def test_policy_orders_pinning_around_the_process_group(monkeypatch: pytest.MonkeyPatch, pin: str, order: list[str]) -> None:
    calls: list[str] = []
    monkeypatch.setattr(rank_env, "pin_cores", lambda r, n: calls.append("pin") or [r])
    monkeypatch.setattr(rank_env.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(rank_env.dist, "init_process_group", lambda *a, **k: calls.append("init_process_group"))
    monkeypatch.setattr(rank_env.torch, "set_num_threads", lambda n: calls.append("set_num_threads"))
    for key, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(key, value)
    env = init_rank("cpu", None, pin=pin)
    assert calls == order
    assert (env.pin, env.pinned_cores) == (pin, None if pin == "none" else [1])


def test_unknown_policy_is_rejected() -> None:
    with pytest.raises(ValueError, match="pin must be one of compute, all, none"):
        TrialConfig(suite="s", strategy="baseline", model="m", workload="train", pin="threads")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pin must be one of"):
        init_rank("cpu", None, pin="threads")

"""Per-rank environment: threads and core pinning."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bench.distributed.env import pin_cores, threads_for

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

"""Shared fixtures: run functions on several gloo ranks through the real elastic launcher."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.distributed.launch import launch


def run_ranks(entry: Callable[[Any], Any], payload: Any, world_size: int, log_dir: Path, timeout_s: float = 240) -> list[Any]:
    """Run `entry(payload)` on `world_size` ranks (torch elastic, gloo); return outputs by rank.

    `entry` must be a module-level function (ranks are spawned) and should call
    `bench.distributed.env.init_rank("cpu", None)` first. Decorate it with
    `torch.distributed.elastic.multiprocessing.errors.record` to get tracebacks back.
    """
    result = launch(entry, payload, nprocs=world_size, log_dir=log_dir, timeout_s=timeout_s)
    if result.error is not None:
        raise AssertionError(f"rank {result.failed_rank} failed:\n{result.error}")
    return [result.outputs[r] for r in sorted(result.outputs)]


@pytest.fixture
def ranks(tmp_path: Path) -> Callable[..., list[Any]]:
    """`ranks(entry, payload, world_size)` -> list of per-rank return values."""

    def _run(entry: Callable[[Any], Any], payload: Any, world_size: int, timeout_s: float = 240) -> list[Any]:
        return run_ranks(entry, payload, world_size, tmp_path / f"logs-ws{world_size}", timeout_s)

    return _run

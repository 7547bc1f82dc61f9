"""Flight-recorder entries read right: every torch dtype's bytes, and the size of subgroups."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from bench.comm.accounting import CommAccountant
from bench.distributed.env import init_rank, shutdown

pytestmark = pytest.mark.multirank


def torch_dtypes() -> list[torch.dtype]:
    return sorted({v for v in vars(torch).values() if isinstance(v, torch.dtype)}, key=str)


@record
def broadcast_every_dtype(_: object) -> list[dict[str, Any]]:
    """One broadcast of a [2, 3] tensor of each torch dtype, as the recorder logged it."""
    init_rank("cpu", None)
    try:
        acc = CommAccountant()
        acc.start()
        for dtype in torch_dtypes():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tensor = torch.empty(2, 3, dtype=dtype)
            try:
                dist.broadcast(tensor, 0)
            except RuntimeError:  # gloo has no kernel for e.g. uint16; the recorder logged it first
                pass
        return [{"dtype": r.dtype, "numel": r.numel, "in_bytes": r.in_bytes} for r in acc.stop()]
    finally:
        shutdown()


def test_every_torch_dtype_is_counted_at_its_storage_bytes(ranks: Any) -> None:
    (records,) = ranks(broadcast_every_dtype, None, 1)
    expected = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for dtype in torch_dtypes():
            tensor = torch.empty(2, 3, dtype=dtype)
            if tensor.is_quantized:  # c10d refuses these before the recorder sees them (torch 2.13)
                continue
            sent = torch.view_as_real(tensor) if tensor.is_complex() else tensor  # c10d sends complex as real pairs
            name = str(sent.dtype).removeprefix("torch.")
            expected.append({"dtype": name, "numel": sent.numel(), "in_bytes": tensor.untyped_storage().nbytes()})
    assert records == expected  # 6 bytes for every fp8, fp4x2 and sub-byte dtype, not the 24 of a guessed 4


@record
def subgroup_collectives(_: object) -> list[tuple[str, int | None]]:
    """all_reduce on [0], [0, 1], the world, a group destroyed in the window and one created and destroyed in it."""
    env = init_rank("cpu", None)
    try:
        solo, pair, doomed = dist.new_group([0]), dist.new_group([0, 1]), dist.new_group([0])
        acc = CommAccountant()
        acc.start()
        born = dist.new_group([0])  # every rank takes part in creating a group
        if env.rank == 0:
            for name, group in (("solo", solo), ("doomed", doomed), ("born", born)):
                dist.all_reduce(torch.ones(4), group=group)
                if name != "solo":
                    dist.destroy_process_group(group)
        dist.all_reduce(torch.ones(4), group=pair)
        dist.all_reduce(torch.ones(4))
        return [(r.op, r.group_size) for r in acc.stop()]
    finally:
        shutdown()


def test_subgroup_sizes_are_resolved_and_a_vanished_group_is_unknown_not_the_world(ranks: Any) -> None:
    r0, r1 = ranks(subgroup_collectives, None, 2)
    # "doomed" was alive at the window's start, so its size is known; "born" lived only
    # inside the window, so its size cannot be known and must not read as the world's 2.
    assert r0 == [("all_reduce", 1), ("all_reduce", 1), ("all_reduce", None), ("all_reduce", 2), ("all_reduce", 2)]
    assert r1 == [("all_reduce", 2), ("all_reduce", 2)]


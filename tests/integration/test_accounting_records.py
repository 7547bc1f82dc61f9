"""Flight-recorder entries read right: every torch dtype's bytes."""

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

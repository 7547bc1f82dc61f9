"""Model sizes: dense (quantized formats included), bitmask and CSR transfer sizes, serialized bytes."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch import nn

from bench.models.sizing import dense_bytes, serialized_bytes, size_report, sparse_bytes, sparse_tensor_bytes, tensor_bytes


def crafted(rows: int = 10, cols: int = 16, nnz: int = 20, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    t = torch.zeros(rows * cols, dtype=dtype)
    t[torch.randperm(rows * cols, generator=torch.Generator().manual_seed(0))[:nnz]] = 1.5
    return t.view(rows, cols)


def test_bitmask_and_csr_sizes_of_a_crafted_tensor() -> None:
    t = crafted()  # 160 float32 elements, 20 non-zeros
    assert sparse_tensor_bytes(t, "bitmask") == 160 // 8 + 20 * 4 == 100
    assert sparse_tensor_bytes(t, "csr") == 20 * (4 + 4) + (10 + 1) * 4 == 204
    assert tensor_bytes(t) == 640
    h = crafted(dtype=torch.float16)
    assert sparse_tensor_bytes(h, "bitmask") == 20 + 20 * 2
    assert sparse_tensor_bytes(h, "csr") == 20 * (2 + 4) + 11 * 4


def test_bitmask_rounds_bits_up_to_whole_bytes() -> None:
    t = crafted(3, 5, 2)  # 15 elements: 2 bytes of mask
    assert sparse_tensor_bytes(t, "bitmask") == 2 + 2 * 4


def test_dense_wins_when_sparse_is_larger_and_csr_needs_two_dims() -> None:
    full = torch.ones(10, 16)
    assert sparse_tensor_bytes(full, "bitmask") == sparse_tensor_bytes(full, "csr") == 640
    flat = crafted().flatten()
    assert sparse_tensor_bytes(flat, "csr") == 640 and sparse_tensor_bytes(flat, "bitmask") == 100
    cube = crafted().view(2, 5, 16)
    assert sparse_tensor_bytes(cube, "csr") == 640


def test_model_sizes_count_tied_tensors_once() -> None:
    model = nn.Module()
    model.a = nn.Linear(16, 10, bias=False)
    model.b = nn.Linear(16, 10, bias=False)
    model.b.weight = model.a.weight  # tied
    model.register_buffer("steps", torch.zeros(3, dtype=torch.int64))
    model.register_buffer("scratch", torch.ones(100), persistent=False)  # rebuilt on load: not counted
    with torch.no_grad():
        model.a.weight.copy_(crafted())
    assert dense_bytes(model) == 640 + 24
    assert sparse_bytes(model, "bitmask") == 100 + (1 + 0)  # the int64 zeros: 1 mask byte, no values
    assert sparse_bytes(model, "csr") == 204 + 24
    assert size_report(model)["dense_bytes"] == 640 + 24


def test_quantized_tensors_count_their_qparams() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.13 deprecates quantized tensor creation
        x = crafted(4, 8, 5)
        per_tensor = torch.quantize_per_tensor(x, 0.1, 0, torch.qint8)
        per_channel = torch.quantize_per_channel(x, torch.full((4,), 0.1), torch.zeros(4, dtype=torch.int64), 0, torch.qint8)
    assert tensor_bytes(per_tensor) == 32 + 8 + 8  # float64 scale, int64 zero point
    assert tensor_bytes(per_channel) == 32 + 4 * 8 + 4 * 8  # float64 scales, int64 zero points
    # The integers go sparse, the qparams as they are: 4 mask bytes + 5 int8 values + 16.
    assert sparse_tensor_bytes(per_tensor, "bitmask") == 4 + 5 + 16


def test_serialized_bytes_is_the_torch_save_length() -> None:
    model = nn.Linear(16, 10)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    assert serialized_bytes(model) == len(buf.getvalue())
    assert serialized_bytes(model) > dense_bytes(model) == (160 + 10) * 4


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="bitmask"):
        sparse_tensor_bytes(crafted(), "coo")  # type: ignore[arg-type]

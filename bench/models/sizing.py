"""Honest model sizes: dense storage (quantized formats included), sparse formats, serialized bytes."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import nn


def _leaves(value: Any) -> Iterator[torch.Tensor]:
    """Plain tensors inside a state-dict value (tuples of packed params, tensor subclasses)."""
    if isinstance(value, torch.Tensor):
        if type(value) is not torch.Tensor and hasattr(value, "__tensor_flatten__"):
            names, _ = value.__tensor_flatten__()
            for name in names:
                yield from _leaves(getattr(value, name))
        else:
            yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _leaves(v)


def tensor_bytes(t: torch.Tensor) -> int:
    """Storage bytes of one plain tensor; a quantized tensor counts its integers plus its scales/zero points."""
    if t.is_quantized:
        data = t.numel() * t.element_size()
        if t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams):
            q = t.q_per_channel_scales()
            z = t.q_per_channel_zero_points()
            return data + q.numel() * q.element_size() + z.numel() * z.element_size()
        return data + 8 + 8  # one float64 scale and one int64 zero point
    return t.numel() * t.element_size()


def _state_tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    seen: set[tuple[int, int]] = set()
    for value in model.state_dict(keep_vars=False).values():
        for t in _leaves(value):
            key = (t.data_ptr(), t.numel()) if not t.is_quantized else (id(t), t.numel())
            if t.data_ptr() and key in seen:  # tied weights are stored once
                continue
            seen.add(key)
            yield t


def dense_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer at its real storage size, tied tensors once."""
    return sum(tensor_bytes(t) for t in _state_tensors(model))


def sparse_tensor_bytes(t: torch.Tensor, format: Literal["bitmask", "csr"]) -> int:
    """Bytes to send `t` sparsely, or densely when that is smaller.

    bitmask: ceil(n/8) + nnz x elem; CSR (2-D only): nnz x (elem + 4) + (rows + 1) x 4.
    """
    dense = tensor_bytes(t)
    if t.is_quantized or not t.is_floating_point():
        return dense
    nnz = int(torch.count_nonzero(t))
    if format == "bitmask":
        sparse = (t.numel() + 7) // 8 + nnz * t.element_size()
    elif t.dim() == 2:
        sparse = nnz * (t.element_size() + 4) + (t.shape[0] + 1) * 4
    else:
        sparse = dense
    return min(dense, sparse)


def sparse_bytes(model: nn.Module, format: Literal["bitmask", "csr"] = "bitmask") -> int:
    """What a transfer of the model would send with each tensor in its smaller form."""
    return sum(sparse_tensor_bytes(t, format) for t in _state_tensors(model))


def serialized_bytes(model: nn.Module) -> int:
    """Length of `torch.save(model.state_dict())`."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes

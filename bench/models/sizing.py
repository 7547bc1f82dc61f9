"""Honest model sizes: dense storage (quantized formats included), sparse transfer formats, serialized bytes.

All three read the model's state dict, i.e. its parameters and persistent buffers: what a
checkpoint stores and a transfer sends. Non-persistent buffers (rotary `inv_freq`, causal
masks) are rebuilt from the config on load, so they are not counted. A tensor reachable
under two names (tied embeddings) is counted once.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import nn

SparseFormat = Literal["bitmask", "csr"]
_PER_CHANNEL = (torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams)
_INDEX_BYTES = 4  # int32 column indices and row pointers in CSR


def _leaves(value: Any) -> Iterator[torch.Tensor]:
    """The plain tensors inside one state-dict value.

    torch.ao's dynamic quantized Linear stores `(qweight, bias)` as a tuple under
    `_packed_params._packed_params`; torchao weights are tensor subclasses whose
    `__tensor_flatten__` names their inner tensors (int data, scales, zero points).
    """
    if isinstance(value, torch.Tensor):
        if type(value) not in (torch.Tensor, nn.Parameter) and hasattr(value, "__tensor_flatten__"):
            names, _ = value.__tensor_flatten__()
            for name in names:
                yield from _leaves(getattr(value, name))
        else:
            yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _leaves(v)


def state_tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    """Every plain tensor of `model`'s state dict, each storage region once."""
    seen: set[tuple[int, int, torch.dtype]] = set()
    for value in model.state_dict().values():
        for t in _leaves(value):
            key = (t.data_ptr(), t.numel(), t.dtype)
            if t.numel() and key in seen:  # tied weights: the same memory under two names
                continue
            seen.add(key)
            yield t


def qparams_bytes(t: torch.Tensor) -> int:
    """Bytes of a torch quantized tensor's scales and zero points (0 for other tensors).

    Per tensor: one float64 scale + one int64 zero point = 16 bytes. Per channel: the
    `q_per_channel_scales()` and `q_per_channel_zero_points()` tensors at their sizes.
    """
    if not t.is_quantized:
        return 0
    if t.qscheme() in _PER_CHANNEL:
        scales, zeros = t.q_per_channel_scales(), t.q_per_channel_zero_points()
        return scales.numel() * scales.element_size() + zeros.numel() * zeros.element_size()
    return 8 + 8


def tensor_bytes(t: torch.Tensor) -> int:
    """numel x element size, plus `qparams_bytes` for torch quantized tensors."""
    return t.numel() * t.element_size() + qparams_bytes(t)


def dense_bytes(model: nn.Module) -> int:
    """Sum of `tensor_bytes` over `state_tensors(model)`: the model stored densely, as it is.

    Quantized weights count their integers plus their scales and zero points: a torch.ao
    dynamic Linear is int8 weight (out x in) + 16 bytes of qparams + its float bias + the
    module's 4-byte `scale` and 8-byte `zero_point`; a torchao weight is the sum of its
    inner tensors (e.g. Int8Tensor: int8 qdata + float32 scale + int8 zero point per row).
    """
    return sum(tensor_bytes(t) for t in state_tensors(model))


def bitmask_nbytes(numel: int, nnz: int, element_size: int) -> int:
    """A bitmask (one bit per element, whole bytes) plus the non-zero values."""
    return (numel + 7) // 8 + nnz * element_size


def sparse_tensor_bytes(t: torch.Tensor, format: SparseFormat = "bitmask") -> int:
    """Bytes to send `t` in `format`, or densely when that is no larger.

    With n elements, nnz non-zeros of e bytes each (the integers of a quantized tensor,
    whose qparams are always sent as they are):
      bitmask: ceil(n / 8) + nnz x e;
      csr (2-D, rows x cols): nnz x (e + 4) + (rows + 1) x 4, i.e. values, int32 column
        indices and int32 row pointers; other ranks have no CSR form and go dense.
    """
    values = t.int_repr() if t.is_quantized else t
    dense = values.numel() * values.element_size()
    nnz = int(torch.count_nonzero(values)) if values.numel() else 0
    if format == "bitmask":
        sparse = bitmask_nbytes(values.numel(), nnz, values.element_size())
    elif format == "csr" and values.dim() == 2:
        sparse = nnz * (values.element_size() + _INDEX_BYTES) + (values.shape[0] + 1) * _INDEX_BYTES
    elif format == "csr":
        sparse = dense
    else:
        raise ValueError(f"format must be 'bitmask' or 'csr', got {format!r}")
    return min(dense, sparse) + qparams_bytes(t)


def sparse_bytes(model: nn.Module, format: SparseFormat = "bitmask") -> int:
    """What sending `model` would cost with every tensor in its smaller form (`sparse_tensor_bytes`)."""
    return sum(sparse_tensor_bytes(t, format) for t in state_tensors(model))


def serialized_bytes(model: nn.Module) -> int:
    """Length of `torch.save(model.state_dict())` written to memory (pickle framing included)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def size_report(model: nn.Module) -> dict[str, int]:
    """All four sizes, in bytes, under the column names the results use."""
    return {
        "dense_bytes": dense_bytes(model),
        "bitmask_bytes": sparse_bytes(model, "bitmask"),
        "csr_bytes": sparse_bytes(model, "csr"),
        "serialized_bytes": serialized_bytes(model),
    }

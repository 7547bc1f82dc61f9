"""Gradient codecs torch lacks (top-k, EF-SignSGD signs, QSGD) on flat fp32 tensors, and one-buffer packing.

Every codec is a pair of pure functions on a flat 1-D float32 tensor of `n` elements; no
torch.distributed here, so the math is unit-testable on one process. torch ships DDP hooks
for fp16/bf16 casts and PowerSGD only; these three families are written by hand.

Payload formats (what one rank sends for one bucket, see `bench.strategies.grad_compression.hooks`):

- top-k: `values` float32[k] then `indices` int32[k]: 8k bytes (k is known to every rank
  from n and the ratio, so no header).
- sign: `scale` float32[1] then the signs as uint8[ceil(n/8)], then (zeros="zero", the
  default) a second bit-plane uint8[ceil(n/8)] marking the nonzero elements: 4 + 2·ceil(n/8)
  bytes (zeros="plus": 4 + ceil(n/8)). Bit order is LSB-first (numpy's
  `packbits(bitorder="little")`): element i is bit (i % 8) of byte (i // 8); a set sign bit
  means x_i >= 0. The tail bits of the last byte are 0 and ignored. The scale is always sent,
  1.0 when unscaled, so the format does not depend on that option. See `sign_encode` for why
  exact zeros get their own bit-plane.
- QSGD: `norm` float32[1] then the signed levels in the narrowest integer dtype holding
  [-s, s]: 4 + n * itemsize bytes.

The fixed-width header parts come first so that, packed into one uint8 buffer, every part
starts at an offset its dtype can be viewed at (see `pack`/`unpack`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

Spec = tuple[torch.dtype, int]  # (dtype, numel) of one part of a packed payload

_SCALE_BYTES = 4  # one float32 header (sign scale, QSGD norm)
_BIT_SHIFTS = torch.arange(8, dtype=torch.uint8)  # LSB-first bit positions within a byte


# --- top-k -------------------------------------------------------------------------


def topk_count(n: int, ratio: float) -> int:
    """Elements top-k keeps of n at `ratio`: ceil(ratio * n), at least 1 and at most n."""
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    return min(n, max(1, math.ceil(ratio * n)))


def topk_encode(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k entries of largest magnitude: (values float32[k], indices int32[k]), unordered."""
    if x.numel() >= 2**31:
        raise ValueError("top-k indices are int32: tensors must have fewer than 2**31 elements")
    # sorted=False: the decoder scatters by index, so the order is irrelevant and sorting costs.
    _, idx = torch.topk(x.abs(), k, sorted=False)
    return x[idx], idx.to(torch.int32)


def topk_decode(values: torch.Tensor, indices: torch.Tensor, n: int) -> torch.Tensor:
    """Dense float32[n]: `values` at `indices`, zero elsewhere."""
    out = torch.zeros(n, dtype=values.dtype, device=values.device)
    out[indices] = values
    return out


def topk_payload_bytes(n: int, k: int) -> int:
    """Bytes one rank sends for top-k of n elements: k float32 values + k int32 indices."""
    if not 0 < k <= n:
        raise ValueError(f"k must be in [1, n={n}], got {k}")
    return k * (4 + 4)


def topk_specs(k: int) -> list[Spec]:
    return [(torch.float32, k), (torch.int32, k)]


# --- sign (EF-SignSGD) ---------------------------------------------------------------


SignZeros = Literal["zero", "plus"]


def sign_encode(x: torch.Tensor, scaled: bool = True, zeros: SignZeros = "zero") -> list[torch.Tensor]:
    """[scale float32[1], packed signs uint8[ceil(n/8)], (zeros="zero") packed nonzero mask].

    scale = ||x||_1 / n, or 1 unscaled. The scaled form is EF-SignSGD's compressor
    C(x) = ||x||_1/n * sign(x) (Karimireddy et al. 2019): it keeps the update's l1 mass,
    which plain sign(x) does not.

    Exact zeros: one bit cannot say 0, and sign(0) = 0 in the compressor's definition.
    zeros="zero" sends a second bit-plane so that an exact zero decodes to 0 (2 bits per
    element, still 16x fewer bytes than fp32). zeros="plus" sends one bit and decodes an
    exact zero as +scale: a gradient that is exactly zero on every step (an unused
    embedding row, a position past seq_len) then becomes a constant +scale, which an
    Adam-type optimizer turns into a full-lr drift of that parameter.
    """
    n = x.numel()
    scale = (x.abs().sum() / n if scaled else torch.ones((), device=x.device)).reshape(1).to(torch.float32)
    parts = [scale, pack_bits(x >= 0)]
    if zeros == "zero":
        parts.append(pack_bits(x != 0))
    return parts


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """Bool or 0/1 values, any shape -> ceil(n/8) bytes, LSB-first, the tail bits 0.

    Shared by the sign codec and the transfer workload's bitmasks.
    """
    flat = bits.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    cols = (torch.cat([flat, flat.new_zeros(pad)]) if pad else flat).view(-1, 8)
    # Eight shifted ORs over strided columns: vectorised and no uint8 overflow possible.
    packed = cols[:, 0].clone()
    for j in range(1, 8):
        packed |= cols[:, j] << j
    return packed


def unpack_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Bytes -> the first n bits as uint8 0/1 values, LSB-first."""
    shifts = _BIT_SHIFTS.to(packed.device)
    return ((packed.unsqueeze(1) >> shifts) & 1).view(-1)[:n]


def sign_decode(parts: Sequence[torch.Tensor], n: int) -> torch.Tensor:
    """Dense float32[n] from `sign_encode`'s parts: +scale where the sign bit is set, -scale
    elsewhere, and 0 where the nonzero plane (when sent) has its bit clear."""
    scale, packed, *nonzero = parts
    signs = unpack_bits(packed, n).to(torch.float32).mul_(2).sub_(1)
    if nonzero:
        signs.mul_(unpack_bits(nonzero[0], n))
    return signs.mul_(scale)


def sign_payload_bytes(n: int, zeros: SignZeros = "zero") -> int:
    """Bytes one rank sends for the signs of n elements: a float32 scale + one or two bit-planes."""
    return _SCALE_BYTES + math.ceil(n / 8) * (2 if zeros == "zero" else 1)


def sign_specs(n: int, zeros: SignZeros = "zero") -> list[Spec]:
    planes = 2 if zeros == "zero" else 1
    return [(torch.float32, 1), *[(torch.uint8, math.ceil(n / 8))] * planes]


# --- QSGD --------------------------------------------------------------------------


def qsgd_dtype(levels: int) -> torch.dtype:
    """The narrowest signed integer dtype holding [-levels, levels]."""
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    for dtype in (torch.int8, torch.int16, torch.int32):
        if levels <= torch.iinfo(dtype).max:
            return dtype
    raise ValueError(f"levels={levels} does not fit in int32")


def qsgd_encode(x: torch.Tensor, levels: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(norm float32[1], signed levels int8/16/32[n]) with E[decode] = x (Alistarh et al. 2017).

    |x_i| / ||x||_2 * s lies in [l, l + 1]; it is rounded up with probability equal to its
    fractional part, so each quantized level is unbiased.
    """
    norm = torch.linalg.vector_norm(x).reshape(1).to(torch.float32)
    # clamp_min instead of a branch on norm == 0: no host sync, and x = 0 gives r = 0.
    r = x.abs() / norm.clamp_min(torch.finfo(torch.float32).tiny) * levels
    low = r.floor()
    noise = torch.rand(x.shape, generator=generator, device=generator.device).to(x.device)
    # The clamp guards the one rounding case r = s(1 + eps), which would overflow int8 at s=127.
    level = (low + (noise < r - low)).clamp_(max=levels)
    return norm, (torch.sign(x) * level).to(qsgd_dtype(levels))


def qsgd_decode(norm: torch.Tensor, q: torch.Tensor, levels: int) -> torch.Tensor:
    """Dense float32[n]: q * ||x||_2 / s."""
    return q.to(torch.float32).mul_(norm / levels)


def qsgd_payload_bytes(n: int, levels: int) -> int:
    """Bytes one rank sends for QSGD of n elements: one float32 norm + n narrowest integers."""
    return _SCALE_BYTES + n * qsgd_dtype(levels).itemsize


def qsgd_specs(n: int, levels: int) -> list[Spec]:
    return [(torch.float32, 1), (qsgd_dtype(levels), n)]


# --- one buffer per collective -------------------------------------------------------


def pack(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate the raw bytes of `parts` (any dtypes) into one uint8 tensor.

    One buffer lets a hook send a whole payload with a single collective. Put wider dtypes
    first (as the codecs above do) so `unpack` can view each part without copying.
    """
    return torch.cat([p.contiguous().reshape(-1).view(torch.uint8) for p in parts])


def unpack(buffer: torch.Tensor, specs: Sequence[Spec]) -> list[torch.Tensor]:
    """Split a uint8 buffer written by `pack` back into tensors of the given (dtype, numel).

    Parts are views of `buffer` where the byte offset allows it; a misaligned part (e.g.
    rank r's row of an all-gather whose per-rank size is not a multiple of 4) is copied
    first, since torch can only view bytes as a wider dtype at an aligned offset.
    """
    expected = sum(dtype.itemsize * numel for dtype, numel in specs)
    if buffer.dtype != torch.uint8 or buffer.dim() != 1 or buffer.numel() != expected:
        raise ValueError(f"expected a 1-D uint8 buffer of {expected} bytes, got {buffer.dtype}[{buffer.numel()}]")
    out, offset = [], 0
    for dtype, numel in specs:
        raw = buffer[offset : offset + numel * dtype.itemsize]
        if raw.storage_offset() % dtype.itemsize:
            raw = raw.clone()
        out.append(raw.view(dtype))
        offset += numel * dtype.itemsize
    return out

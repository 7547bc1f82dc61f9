"""`transfer`: rank 0 sends the (compressed) model to every other rank, as a rollout or parameter server would.

Rank 0 builds the model, applies the MODEL-phase strategies (pruning, low-rank,
quantization, casts) and packs its state dict into one byte buffer. Every tensor in it,
down to the inner tensors of quantized weights, goes in its smaller form:
- a plain tensor, floating or integer, whose bitmask (1 bit per element, packed 8 per
  byte) plus non-zero values is smaller than its dense bytes (`sizing.bitmask_nbytes`)
  goes that way: pruned float weights, and the int8 data of pruned-then-quantized ones
  (symmetric quantization keeps a zero weight at integer 0);
- a torch quantized tensor (torch.ao dynamic int8) goes as its integer representation,
  packed by the same rule, plus its scales and zero points;
- a torchao weight (a tensor subclass) goes as its inner tensors (`__tensor_flatten__`),
  each packed by the same rule, and is rebuilt with `__tensor_unflatten__`;
- everything else, and tensors under 64 elements, go as they are.
A tensor reachable under two names (tied embeddings) is packed once. Each step is three
parts, timed apart: rank 0 packs the state into one buffer (encode), broadcasts its length
and then the buffer (broadcast: until the last receiver holds it), and the receivers unpack
it (decode: the slowest receiver). The step's latency is their sum. Part boundaries are
read from CLOCK_MONOTONIC, which is one clock for every process on a machine (ranks are
local processes), and exchanged after the window. After the window receivers also check a
SHA-256 digest of every tensor's bytes against rank 0's, so a lossy transfer fails the trial.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from bench.contracts import Accuracy, Parallel, RankResult, TrialConfig
from bench.distributed.env import RankEnv
from bench.errors import SkipTrial
from bench.eval.lm import model_sizes
from bench.meters.window import Window
from bench.models.sizing import bitmask_nbytes
from bench.strategies import Aspect, Composition
from bench.strategies.grad_compression.codecs import pack_bits, unpack_bits
from bench.strategies.metrics import Metric
from bench.workloads import Workload, register
from bench.workloads.common import MODEL_METRICS, SIZE_METRICS, build_state

MIN_SPARSE_NUMEL = 64  # below this the entry's pickle framing outweighs any bits saved
_PER_TENSOR = (torch.per_tensor_affine, torch.per_tensor_symmetric)


def bitmask_pays(t: torch.Tensor) -> bool:
    """Whether a plain (float or integer) tensor is smaller as bitmask + non-zeros than dense."""
    if t.is_quantized or t.dtype == torch.bool or t.is_complex() or t.numel() < MIN_SPARSE_NUMEL:
        return False
    nnz = int(torch.count_nonzero(t))
    return bitmask_nbytes(t.numel(), nnz, t.element_size()) < t.numel() * t.element_size()


def qparams(t: torch.Tensor) -> tuple[Any, Any, int | None]:
    """(scale, zero point, axis) of a quantized tensor: Python numbers and axis None per tensor,
    tensors per channel (float zero points included: `_make_per_channel_quantized_tensor`
    rebuilds every per-channel scheme from them)."""
    if t.qscheme() in _PER_TENSOR:
        return t.q_scale(), t.q_zero_point(), None
    return t.q_per_channel_scales(), t.q_per_channel_zero_points(), t.q_per_channel_axis()


def is_subclass(t: torch.Tensor) -> bool:
    """A tensor subclass that names its inner tensors (torchao's quantized weights)."""
    return type(t) not in (torch.Tensor, torch.nn.Parameter) and hasattr(t, "__tensor_flatten__")


@dataclass(frozen=True, slots=True)
class Bitmask:
    """A plain tensor as its non-zero pattern (packed bits) and its non-zero values in order."""

    bits: torch.Tensor
    values: torch.Tensor
    shape: tuple[int, ...]

    def decode(self) -> torch.Tensor:
        numel = int(torch.Size(self.shape).numel())
        # masked_scatter_ fills in order without materialising int64 indices (index_put_ does).
        dense = torch.zeros(numel, dtype=self.values.dtype).masked_scatter_(unpack_bits(self.bits, numel).bool(), self.values)
        return dense.view(self.shape)


@dataclass(frozen=True, slots=True)
class Quantized:
    """A torch quantized tensor: its integers (maybe a Bitmask) and per-tensor or per-channel qparams."""

    ints: Any
    scale: Any  # a float per tensor, an (encoded) tensor per channel
    zero_point: Any
    axis: int | None  # None: per tensor

    def decode(self) -> torch.Tensor:
        ints, scale, zero_point = (decode_value(v) for v in (self.ints, self.scale, self.zero_point))
        if self.axis is None:
            return torch._make_per_tensor_quantized_tensor(ints, scale, zero_point)
        return torch._make_per_channel_quantized_tensor(ints, scale, zero_point, self.axis)


@dataclass(frozen=True, slots=True)
class Subclass:
    """A tensor subclass as its class, flatten context and (encoded) inner tensors."""

    cls: type
    inner: dict[str, Any]
    ctx: Any
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def decode(self) -> torch.Tensor:
        inner = {name: decode_value(v) for name, v in self.inner.items()}
        return self.cls.__tensor_unflatten__(inner, self.ctx, torch.Size(self.size), self.stride)


class Encoder:
    """Turns state-dict values into their transfer form; counts tensors and their bytes."""

    def __init__(self) -> None:
        self.counts = {"sparse_tensors": 0, "dense_tensors": 0, "payload_tensor_bytes": 0}
        # Source tensor -> its encoding, keyed by storage and view, so tied weights go once;
        # the source is kept alive so that no later tensor can reuse its address.
        self._memo: dict[tuple[Any, ...], tuple[torch.Tensor, Any]] = {}

    def value(self, value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return type(value)(self.value(v) for v in value)
        if not isinstance(value, torch.Tensor):
            return value
        if is_subclass(value):
            names, ctx = value.__tensor_flatten__()
            inner = {name: self.value(getattr(value, name)) for name in names}
            return Subclass(type(value), inner, ctx, tuple(value.size()), tuple(value.stride()))
        if value.is_quantized:
            return self.quantized(value)
        return self.plain(value.detach())

    def quantized(self, t: torch.Tensor) -> Quantized:
        scale, zero_point, axis = qparams(t)
        return Quantized(self.plain(t.int_repr()), self.value(scale), self.value(zero_point), axis)

    def plain(self, t: torch.Tensor) -> Any:
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if key in self._memo:
            return self._memo[key][1]
        if bitmask_pays(t):
            mask = t != 0
            encoded: Any = Bitmask(pack_bits(mask), t[mask], tuple(t.shape))
            self._count(encoded.bits, sparse=True)
            self.counts["payload_tensor_bytes"] += encoded.values.numel() * encoded.values.element_size()
        else:
            encoded = t
            self._count(t, sparse=False)
        self._memo[key] = (t, encoded)
        return encoded

    def _count(self, t: torch.Tensor, sparse: bool) -> None:
        self.counts["sparse_tensors" if sparse else "dense_tensors"] += 1
        self.counts["payload_tensor_bytes"] += t.numel() * t.element_size()


def encode_state(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
    """State dict -> transferable dict, plus counts: tensors sent sparse and dense, and the
    bytes of every tensor in the payload (`payload_tensor_bytes`; the rest is pickle framing).

    `payload_tensor_bytes` equals `sizing.sparse_bytes` of the model when every tensor has at
    least `MIN_SPARSE_NUMEL` elements and none is quantized per tensor (`sparse_bytes` counts
    that scale and zero point as 16 bytes; here they travel as Python numbers).
    """
    encoder = Encoder()
    return {name: encoder.value(v) for name, v in state.items()}, encoder.counts


def decode_value(value: Any) -> Any:
    if isinstance(value, (Bitmask, Quantized, Subclass)):
        return value.decode()
    if isinstance(value, (tuple, list)):
        return type(value)(decode_value(v) for v in value)
    return value


def decode_state(encoded: dict[str, Any]) -> dict[str, Any]:
    return {name: decode_value(v) for name, v in encoded.items()}


def _hash_value(h: Any, value: Any) -> None:
    if isinstance(value, (tuple, list)):
        for v in value:
            _hash_value(h, v)
    elif isinstance(value, torch.Tensor) and is_subclass(value):
        for name in value.__tensor_flatten__()[0]:
            _hash_value(h, getattr(value, name))
    elif isinstance(value, torch.Tensor) and value.is_quantized:
        _hash_value(h, (value.int_repr(), *qparams(value)))
    elif isinstance(value, torch.Tensor):
        t = value.detach().contiguous().reshape(-1)
        if t.is_floating_point():
            t = t + 0.0  # -0.0 + 0.0 is +0.0: a bitmask keeps zeros, not their sign
        h.update(f"{t.dtype}{tuple(value.shape)}".encode())
        h.update(t.view(torch.uint8).numpy())
    else:
        h.update(repr(value).encode())


def digest(state: dict[str, Any]) -> bytes:
    """SHA-256 of every name, dtype, shape and tensor byte of `state` (quantized: integers + qparams).

    Floating zeros are hashed as +0.0: pruning leaves -0.0 where it zeroed a negative weight
    (w x 0), the receiver's bitmask restores +0.0, and only sign-inspecting operations
    (1/x, copysign) can tell them apart. Every other bit must match.
    """
    h = hashlib.sha256()
    for name, value in state.items():
        h.update(name.encode())
        _hash_value(h, value)
    return h.digest()


def serialize(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def verify(local: bytes, env: RankEnv) -> None:
    """Receivers compare their digest of what they unpacked with rank 0's."""
    ref = torch.frombuffer(bytearray(local), dtype=torch.uint8).clone()
    dist.broadcast(ref, src=0)
    if not env.is_main and bytes(ref.tolist()) != local:
        raise RuntimeError(f"transferred state differs from rank 0's: digest {local.hex()[:16]} vs {bytes(ref.tolist()).hex()[:16]}")


def pack(sd: dict[str, Any]) -> torch.Tensor:
    """The encode part of a step: the state dict in its transfer form, serialized into one byte tensor."""
    return torch.frombuffer(bytearray(serialize(encode_state(sd)[0])), dtype=torch.uint8)


def unpack(buffer: torch.Tensor) -> dict[str, Any]:
    """The decode part of a step: the received bytes back into a state dict."""
    return decode_state(torch.load(io.BytesIO(buffer.numpy().tobytes()), weights_only=False))


def step_parts(marks: list[list[tuple[float, float, float, float]]]) -> dict[str, list[float]]:
    """Per step, from every rank's (start, encoded, received, decoded) clock readings (rank 0 first):
    encode on rank 0, broadcast until the last receiver holds the buffer, the slowest decode."""
    out: dict[str, list[float]] = {"encode": [], "broadcast": [], "decode": []}
    for step in zip(*marks):
        start, encoded = step[0][0], step[0][1]
        receivers = step[1:]
        out["encode"].append(encoded - start)
        out["broadcast"].append(max(r[2] for r in receivers) - encoded)
        out["decode"].append(max(r[3] - r[2] for r in receivers))
    return out


def source_state(cfg: TrialConfig, comp: Composition, env: RankEnv) -> tuple[dict[str, Any], dict[str, Any]]:
    """Rank 0: the compressed model's state dict, and its sizes (dense, packed, serialized) and digest."""
    state = build_state(cfg, comp, env, (Aspect.MODEL,))
    sd = state.model.state_dict()
    encoded, counts = encode_state(sd)
    metrics = {**state.metrics, **counts, **model_sizes(state.model), "payload_bytes": len(serialize(encoded))}
    metrics.update(serialized_dense_bytes=len(serialize(sd)), state_sha256=digest(sd).hex())
    return sd, metrics


def run(cfg: TrialConfig, comp: Composition, env: RankEnv) -> RankResult:
    if env.world_size < 2:
        raise SkipTrial("transfer needs at least 2 ranks (rank 0 sends, the others receive)")
    sd, metrics = source_state(cfg, comp, env) if env.is_main else ({}, {})
    buffer = torch.empty(0, dtype=torch.uint8)
    size = torch.zeros(1, dtype=torch.int64)
    received: dict[str, Any] = {}
    marks: list[tuple[float, float, float, float]] = []

    def step() -> None:
        nonlocal buffer, received
        start = time.monotonic()
        if env.is_main:
            buffer = pack(sd)
            size[0] = buffer.numel()
        encoded = time.monotonic()
        dist.broadcast(size, src=0)
        if not env.is_main and buffer.numel() != int(size):
            buffer = torch.empty(int(size), dtype=torch.uint8)
        dist.broadcast(buffer, src=0)
        got = time.monotonic()
        if not env.is_main:
            received = unpack(buffer)
        marks.append((start, encoded, got, time.monotonic()))

    window = Window(env.device, env.backend, track_comm=cfg.track_comm).measure(step, warmup=cfg.warmup_steps, steps=cfg.steps)
    verify(bytes.fromhex(metrics["state_sha256"]) if env.is_main else digest(received), env)
    every: list[Any] = [None] * env.world_size
    dist.all_gather_object(every, marks[cfg.warmup_steps :])
    nbytes = torch.tensor([float(metrics.get("payload_bytes", 0))], dtype=torch.float64)
    dist.broadcast(nbytes, src=0)
    return RankResult(
        rank=env.rank,
        window=window,
        tokens_per_step=None,
        accuracy=Accuracy(),
        metrics=metrics,
        analytic_ops={"broadcast": float(nbytes) + size.element_size()},
        parallel=Parallel(dp=env.world_size),
        step_parts_s=step_parts(every),
    )


WORKLOAD = register(
    Workload(
        name="transfer",
        summary="rank 0 broadcasts the (compressed) model state; bytes vs its serialized size",
        run=run,
        metrics=(
            *MODEL_METRICS,
            *SIZE_METRICS,
            Metric("sparse_tensors", int, "tensors", doc="tensors sent as bitmask + non-zeros"),
            Metric("dense_tensors", int, "tensors", doc="tensors sent dense"),
            Metric("payload_tensor_bytes", int, "B", doc="bytes of every tensor in the payload (the rest is pickle framing)"),
            Metric("payload_bytes", int, "B", column="transfer_payload_bytes", doc="bytes of the packed state rank 0 broadcasts"),
            Metric("serialized_dense_bytes", int, "B", column="serialized_bytes", doc="torch.save of the plain state dict"),
            Metric("state_sha256", str, doc="digest of the state every receiver must reproduce"),
        ),
    )
)

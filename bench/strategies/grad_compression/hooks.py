"""DDP comm hooks for top-k, EF-SignSGD and QSGD (one all-gather of a packed uint8 payload per bucket),
and torch's bf16 cast under a name DDP accepts on gloo (`bf16_cast_hook`).

Register with `ddp.register_comm_hook(CompressionState(TopK(ratio=0.01)), compression_hook)`.

Why all-gather rather than all-reduce: the payloads are sparse (top-k indices differ per
rank) or integer codes with a per-rank scale, so they cannot be summed on the wire; every
rank receives every rank's payload, decodes it and averages locally.

Byte accounting: `hook_payload_bytes` is what ONE rank contributes for a bucket. commbench's
accounting (`bench.comm.accounting`, nccl-tests convention) records an all_gather by its
*total* output size, i.e. `hook_payload_bytes(...) * world_size` per bucket; the cost model
must multiply accordingly.

Threading: as in torch's own hooks, the hook only enqueues the collective (`async_op=True`)
and returns `fut.then(decode_and_average)`. The callback runs on whichever thread completes
the future (a gloo worker thread, or inline if it already completed) and issues no
collective, so bucket order across ranks cannot diverge (contrast `bench.strategies.grad_compression.powersgd`).
"""

# No `from __future__ import annotations`: DDP.register_comm_hook compares the hook's
# annotations with the real `dist.GradBucket` / `Future[Tensor]` objects, not strings.
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.distributed as dist

from bench.strategies.grad_compression import codecs


@dataclass(kw_only=True, slots=True, frozen=True)
class TopK:
    """Keep the ceil(ratio * n) largest-magnitude entries (biased: error feedback on by default)."""

    kind: ClassVar[str] = "topk"
    random: ClassVar[bool] = False  # whether encode draws from the state's generator
    ratio: float = 0.01
    error_feedback: bool = True

    def __post_init__(self) -> None:
        codecs.topk_count(1, self.ratio)  # validates the ratio

    def encode(self, x: torch.Tensor, generator: torch.Generator | None) -> list[torch.Tensor]:
        return list(codecs.topk_encode(x, codecs.topk_count(x.numel(), self.ratio)))

    def specs(self, n: int) -> list[codecs.Spec]:
        return codecs.topk_specs(codecs.topk_count(n, self.ratio))

    def decode(self, parts: list[torch.Tensor], n: int) -> torch.Tensor:
        return codecs.topk_decode(parts[0], parts[1], n)

    def add_decoded(self, acc: torch.Tensor, parts: list[torch.Tensor]) -> None:
        # A scatter-add per rank instead of a dense decode: k work, not n.
        acc.index_add_(0, parts[1], parts[0])

    def payload_bytes(self, n: int) -> int:
        return codecs.topk_payload_bytes(n, codecs.topk_count(n, self.ratio))


@dataclass(kw_only=True, slots=True, frozen=True)
class Sign:
    """Signs plus a float32 scale (EF-SignSGD; biased: error feedback on by default).

    `zeros` says what an exact zero becomes (`codecs.sign_encode`): "zero" (default, a second
    bit-plane, 0 decodes to 0) or "plus" (1 bit, 0 decodes to +scale).
    """

    kind: ClassVar[str] = "sign"
    random: ClassVar[bool] = False
    error_feedback: bool = True
    scaled: bool = True
    zeros: codecs.SignZeros = "zero"

    def encode(self, x: torch.Tensor, generator: torch.Generator | None) -> list[torch.Tensor]:
        return codecs.sign_encode(x, self.scaled, self.zeros)

    def specs(self, n: int) -> list[codecs.Spec]:
        return codecs.sign_specs(n, self.zeros)

    def decode(self, parts: list[torch.Tensor], n: int) -> torch.Tensor:
        return codecs.sign_decode(parts, n)

    def add_decoded(self, acc: torch.Tensor, parts: list[torch.Tensor]) -> None:
        acc.add_(self.decode(parts, acc.numel()))

    def payload_bytes(self, n: int) -> int:
        return codecs.sign_payload_bytes(n, self.zeros)


@dataclass(kw_only=True, slots=True, frozen=True)
class QSGD:
    """Stochastic quantization to `levels` levels per sign (unbiased, so error feedback is off by default)."""

    kind: ClassVar[str] = "qsgd"
    random: ClassVar[bool] = True
    levels: int = 127
    error_feedback: bool = False

    def __post_init__(self) -> None:
        codecs.qsgd_dtype(self.levels)  # validates the level count

    def encode(self, x: torch.Tensor, generator: torch.Generator | None) -> list[torch.Tensor]:
        if generator is None:
            raise ValueError("QSGD needs a torch.Generator")
        return list(codecs.qsgd_encode(x, self.levels, generator))

    def specs(self, n: int) -> list[codecs.Spec]:
        return codecs.qsgd_specs(n, self.levels)

    def decode(self, parts: list[torch.Tensor], n: int) -> torch.Tensor:
        return codecs.qsgd_decode(parts[0], parts[1], self.levels)

    def add_decoded(self, acc: torch.Tensor, parts: list[torch.Tensor]) -> None:
        acc.add_(self.decode(parts, acc.numel()))

    def payload_bytes(self, n: int) -> int:
        return codecs.qsgd_payload_bytes(n, self.levels)


Codec = TopK | Sign | QSGD
CODECS: dict[str, type[Codec]] = {c.kind: c for c in (TopK, Sign, QSGD)}


def make_codec(kind: str, params: Mapping[str, Any] | None = None) -> Codec:
    """`make_codec("topk", {"ratio": 0.01})`; an unknown kind lists the known ones."""
    if kind not in CODECS:
        raise KeyError(f"unknown codec {kind!r}; known: {sorted(CODECS)}")
    return CODECS[kind](**(params or {}))


def hook_payload_bytes(kind: str, n: int, params: Mapping[str, Any] | None = None) -> int:
    """Bytes ONE rank contributes to the all_gather of a bucket of n elements.

    commbench's accounting records that all_gather by its total output size, which is this
    value times the group size (nccl-tests' S for all_gather).
    """
    return make_codec(kind, params).payload_bytes(n)


@dataclass(slots=True)
class CompressionState:
    """State shared by every bucket's call of `compression_hook`.

    `seed` is offset by the rank, so that ranks draw independent QSGD noise and the
    average's variance falls with the world size; a fixed seed keeps runs reproducible.
    """

    codec: Codec
    process_group: dist.ProcessGroup | None = None  # None: the default group
    seed: int = 0
    residuals: dict[int, torch.Tensor] = field(default_factory=dict)  # bucket index -> error feedback
    generator: torch.Generator | None = None  # created on the first bucket's device
    payload_bytes_sent: int = 0  # this rank's payloads, summed over calls
    gathered_bytes: int = 0  # all_gather output bytes (payload x world size), summed over calls
    calls: int = 0
    last_payload: dict[int, tuple[int, int]] = field(default_factory=dict)  # bucket index -> (numel, bytes)
    # Opt-in (it holds one payload per bucket alive): bucket index -> last packed payload, for tests.
    keep_payloads: bool = False
    payloads: dict[int, torch.Tensor] = field(default_factory=dict)

    def group(self) -> dist.ProcessGroup:
        return self.process_group if self.process_group is not None else dist.group.WORLD

    def generator_on(self, device: torch.device) -> torch.Generator:
        if self.generator is None or self.generator.device != device:
            # Rank 0 outside a process group, so the codec logic also runs in one process.
            rank = dist.get_rank(self.group()) if dist.is_initialized() else 0
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(self.seed * 1_000_003 + rank)
        return self.generator

    def residual(self, index: int, n: int, device: torch.device) -> torch.Tensor:
        """This bucket's error-feedback residual; reset when the bucket's size changed.

        DDP rebuilds its buckets after the first iteration (in gradient-ready order), so an
        index may then cover other parameters: a stale residual would be added to the wrong
        gradients.
        """
        res = self.residuals.get(index)
        if res is None or res.numel() != n:
            res = self.residuals[index] = torch.zeros(n, dtype=torch.float32, device=device)
        return res


def encode_bucket(state: CompressionState, index: int, grad: torch.Tensor) -> torch.Tensor:
    """Encode one flat gradient into a packed uint8 payload, updating the residual.

    With error feedback the sent vector is c = grad + residual and the new residual is
    c - decode(payload): what compression dropped this step is added back next step.
    """
    codec, n = state.codec, grad.numel()
    x = grad.detach().to(torch.float32)
    if codec.error_feedback:
        residual = state.residual(index, n, x.device)
        x = x + residual
    parts = codec.encode(x, state.generator_on(x.device) if codec.random else None)
    if codec.error_feedback:
        torch.sub(x, codec.decode(parts, n), out=residual)
    return codecs.pack(parts)


def average_payloads(codec: Codec, gathered: torch.Tensor, world: int, n: int) -> torch.Tensor:
    """Mean of every rank's decoded payload; `gathered` holds the payloads rank by rank."""
    specs = codec.specs(n)
    acc = torch.zeros(n, dtype=torch.float32, device=gathered.device)
    for row in gathered.view(world, -1):
        codec.add_decoded(acc, codecs.unpack(row, specs))
    return acc.div_(world)


def compression_hook(state: CompressionState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP comm hook: all-gather each rank's compressed bucket, decode all, average into the bucket."""
    group = state.group()
    world = group.size()
    buffer = bucket.buffer()
    n = buffer.numel()
    payload = encode_bucket(state, bucket.index(), buffer)
    gathered = torch.empty(world * payload.numel(), dtype=torch.uint8, device=payload.device)
    state.calls += 1
    state.payload_bytes_sent += payload.numel()
    state.gathered_bytes += gathered.numel()
    state.last_payload[bucket.index()] = (n, payload.numel())
    if state.keep_payloads:
        state.payloads[bucket.index()] = payload
    work = dist.all_gather_into_tensor(gathered, payload, group=group, async_op=True)

    def decode_and_average(fut: torch.futures.Future[Any]) -> torch.Tensor:
        fut.value()  # re-raises a failed collective here rather than returning garbage
        return buffer.copy_(average_payloads(state.codec, gathered, world, n))

    return work.get_future().then(decode_and_average)


def bf16_cast_hook(process_group: dist.ProcessGroup | None, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """torch's `default_hooks.bf16_compress_hook`, statement for statement, under a name DDP lets gloo use.

    DDP refuses a hook *named* `bf16_compress_hook` unless the process group is NCCL >= 2.10
    (`DistributedDataParallel._check_comm_hook` tests `hook.__name__`), although gloo on
    torch 2.13 all-reduces bfloat16 CPU tensors (1.5 + 2.5 = 4.0 at 2 ranks). The math is
    torch's `_compress_hook(torch.bfloat16, ...)`: cast the bucket to bfloat16, divide by
    the group size *in bfloat16, before* the all_reduce (torch divides first to avoid
    overflow), sum, and copy the result back into the bucket's own dtype in place.
    """
    group = process_group if process_group is not None else dist.group.WORLD
    buffer = bucket.buffer()
    compressed = buffer.to(torch.bfloat16).div_(group.size())

    def decompress(fut: torch.futures.Future[Any]) -> torch.Tensor:
        return buffer.copy_(fut.value()[0])

    return dist.all_reduce(compressed, group=group, async_op=True).get_future().then(decompress)

"""`transfer`: rank 0 sends the (compressed) model to every other rank, as a rollout or parameter server would.

Rank 0 builds the model, applies the MODEL-phase strategies (pruning, low-rank,
quantization, casts) and packs its state dict into one byte buffer:
- a floating tensor that is mostly zeros (density <= 1 - 1/(8 x element size), where a
  bitmask pays off) goes as a bitmask (1 bit per element, packed 8 per byte) plus its
  non-zero values, which is what makes pruning pay on the wire;
- everything else goes as is, quantized tensors included (int8 + scales: whatever the
  quantized module stores).
Each step broadcasts the buffer's length and then the buffer; receivers unpack it and
check a checksum against rank 0's, so a transfer that loses data fails the trial.
"""

from __future__ import annotations

import io
import time
from typing import Any

import torch
import torch.distributed as dist

from bench.distributed.env import RankEnv
from bench.errors import SkipTrial
from bench.eval.lm import model_sizes
from bench.runner.config import TrialConfig
from bench.strategies import Composition, Phase
from bench.trackers.window import Window
from bench.workloads.common import build_state

_BITS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Bool tensor -> uint8, 8 flags per byte, little-endian within each byte."""
    flat = mask.reshape(-1)
    pad = (-flat.numel()) % 8
    flat = torch.cat([flat, flat.new_zeros(pad)]) if pad else flat
    return (flat.view(-1, 8).to(torch.uint8) * _BITS).sum(1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, numel: int) -> torch.Tensor:
    return ((packed[:, None] & _BITS) != 0).reshape(-1)[:numel]


def bitmask_pays(t: torch.Tensor) -> bool:
    """A bitmask + values is smaller than dense when density < 1 - 1/(8 x element size)."""
    if not t.is_floating_point() or t.numel() < 64:
        return False
    density = float(torch.count_nonzero(t)) / t.numel()
    return density < 1 - 1 / (8 * t.element_size())


def encode_state(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
    """State dict -> transferable dict (sparse entries for mostly-zero tensors), plus counts."""
    out: dict[str, Any] = {}
    counts = {"sparse_tensors": 0, "dense_tensors": 0}
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and type(value) is torch.Tensor and bitmask_pays(value):
            t = value.detach().contiguous()
            mask = t != 0
            out[name] = {"__bitmask__": pack_bits(mask), "values": t[mask], "shape": tuple(t.shape), "dtype": t.dtype}
            counts["sparse_tensors"] += 1
        else:
            out[name] = value
            counts["dense_tensors"] += 1
    return out, counts


def decode_state(encoded: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in encoded.items():
        if isinstance(value, dict) and "__bitmask__" in value:
            numel = 1
            for d in value["shape"]:
                numel *= d
            dense = torch.zeros(numel, dtype=value["dtype"])
            dense[unpack_bits(value["__bitmask__"], numel)] = value["values"]
            out[name] = dense.view(value["shape"])
        else:
            out[name] = value
    return out


def checksum(state: dict[str, Any]) -> float:
    """Sum of every plain floating tensor (quantized tensors via their int representation)."""
    total = 0.0
    for value in state.values():
        if isinstance(value, torch.Tensor) and type(value) is torch.Tensor:
            if value.is_quantized:
                total += float(value.int_repr().double().sum())
            elif value.is_floating_point():
                total += float(value.double().sum())
    return total


def serialize(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def run(cfg: TrialConfig, comp: Composition, env: RankEnv) -> dict[str, Any]:
    if env.world_size < 2:
        raise SkipTrial("transfer needs at least 2 ranks (rank 0 sends, the others receive)")
    metrics: dict[str, Any] = {}
    if env.is_main:
        state = build_state(cfg, comp, env, (Phase.MODEL,))
        sd = state.model.state_dict()
        t0 = time.perf_counter()
        encoded, counts = encode_state(sd)
        payload = serialize(encoded)
        metrics.update(state.metrics, **counts, **model_sizes(state.model), serialize_s=time.perf_counter() - t0)
        metrics["serialized_dense_bytes"] = len(serialize(sd))
        metrics["payload_bytes"] = len(payload)
        buffer = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
        expected = checksum(sd)
    else:
        buffer = torch.empty(0, dtype=torch.uint8)
        expected = 0.0
    size = torch.tensor([buffer.numel()], dtype=torch.int64)

    received: dict[str, Any] = {}

    def step() -> None:
        nonlocal buffer, received
        dist.broadcast(size, src=0)
        if not env.is_main and buffer.numel() != int(size):
            buffer = torch.empty(int(size), dtype=torch.uint8)
        dist.broadcast(buffer, src=0)
        if not env.is_main:
            received = decode_state(torch.load(io.BytesIO(buffer.numpy().tobytes()), weights_only=False))

    window = Window(env.device, env.backend, track_comm=cfg.track_comm)
    for _ in range(cfg.warmup_steps):
        step()
    window.start()
    for _ in range(cfg.steps):
        with window.timer.step():
            step()
    out = window.stop(cfg.steps)
    check = torch.tensor([expected if env.is_main else checksum(received)], dtype=torch.float64)
    ref = check.clone()
    dist.broadcast(ref, src=0)
    if not env.is_main and not torch.allclose(check, ref, rtol=1e-9, atol=1e-6):
        raise RuntimeError(f"transferred state differs from rank 0's: checksum {float(check)} vs {float(ref)}")
    nbytes = torch.tensor([float(metrics.get("payload_bytes", 0))], dtype=torch.float64)
    dist.broadcast(nbytes, src=0)
    out.update(
        profile=None,
        tokens_per_step=0,
        accuracy={},
        metrics=metrics,
        parallel={"dp": env.world_size, "tp": 1, "pp": 1},
        wrapper=None,
        analytic_ops={"broadcast": float(nbytes) + size.element_size()},
    )
    return out

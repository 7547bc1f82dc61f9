"""Links beyond this machine: published rates, and a calibrated link scaled to another rate.

A published link is its nominal rate per direction and a latency per message; the
bandwidth a collective reaches is that rate times an efficiency, 1.0 unless a calibration
says otherwise (`efficiency`: measured beta over nominal rate, per collective kind, on the
user's own shaped links). Latencies are the vendors' port-to-port or the transport's
typical figures; a collective's per-step latency on a real stack (NCCL, gloo's TCP) is
larger, which is why a calibration on the user's cluster should replace them.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.network.spec import parse_network
from bench.predict.calibrate import AlphaBeta
from bench.predict.step import LinkModel


@dataclass(frozen=True, slots=True)
class Published:
    """A link's published figures: rate per direction (bit/s), latency per message (s), and where from."""

    rate_bps: float
    latency_s: float
    source: str


PUBLISHED: dict[str, Published] = {
    "10gbe": Published(10e9, 10e-6, "IEEE 802.3ae 10GBASE-R line rate; ~10 us per message over kernel TCP (typical, not a spec)"),
    "25gbe": Published(25e9, 8e-6, "IEEE 802.3by 25GBASE-R line rate; ~8 us per message over kernel TCP (typical, not a spec)"),
    "100gbe": Published(100e9, 5e-6, "IEEE 802.3ba/802.3cd 100GBASE line rate; ~5 us per message (RoCE typical, not a spec)"),
    "ib-hdr": Published(200e9, 0.6e-6, "NVIDIA ConnectX-6 datasheet: HDR InfiniBand 200 Gb/s, sub-0.6 us latency"),
    "ib-ndr": Published(400e9, 0.6e-6, "NVIDIA ConnectX-7 datasheet: NDR InfiniBand 400 Gb/s per port"),
    "nvlink4": Published(
        3.6e12, 1e-6, "NVIDIA H100 datasheet: NVLink 4, 900 GB/s per GPU both ways = 450 GB/s (3.6 Tbit/s) each way"
    ),
}


def efficiency(calibrated: Mapping[str, LinkModel], rates: Mapping[str, float]) -> dict[str, float]:
    """Per collective kind, the median of beta / (rate / 8) over calibrated links with a known rate."""
    ratios: dict[str, list[float]] = {}
    for name, link in calibrated.items():
        if name in rates:
            for op, ab in link.by_op.items():
                ratios.setdefault(op, []).append(ab.beta_Bps / (rates[name] / 8))
    return {op: statistics.median(v) for op, v in ratios.items()}


def at_rate(rate_bps: float, latency_s: float, eff: Mapping[str, float], name: str = "", source: str = "") -> LinkModel:
    """A link of `rate_bps` and `latency_s` per message, each collective at its calibrated efficiency (1.0 without one)."""
    default_eff = statistics.median(eff.values()) if eff else 1.0
    by_op = {op: AlphaBeta(latency_s, e * rate_bps / 8, 0, 0.0) for op, e in eff.items()}
    return LinkModel(name or f"{rate_bps:g}bit", AlphaBeta(latency_s, default_eff * rate_bps / 8, 0, 0.0), by_op, source)


def median_alpha(calibrated: Sequence[LinkModel]) -> dict[str, float]:
    """Per collective kind, the median alpha over calibrated links."""
    alphas: dict[str, list[float]] = {}
    for link in calibrated:
        for op, ab in link.by_op.items():
            alphas.setdefault(op, []).append(ab.alpha_s)
    return {op: statistics.median(v) for op, v in alphas.items()}


def resolve(text: str, latency_s: float | None = None) -> Published:
    """A published name (`100gbe`, `ib-ndr`) or a tc rate (`100gbit`); BenchError for anything else."""
    if text.lower() in PUBLISHED:
        p = PUBLISHED[text.lower()]
        return Published(p.rate_bps, p.latency_s if latency_s is None else latency_s, p.source)
    spec = parse_network(text)
    if spec.rate_bps is None:
        from bench.errors import BenchError

        raise BenchError(f"link {text!r}: give a rate (e.g. 100gbit) or one of {', '.join(PUBLISHED)}")
    lat = latency_s if latency_s is not None else (spec.delay_s or 5e-6)
    return Published(
        spec.rate_bps,
        lat,
        f"user-given rate {text}" + ("" if latency_s is not None or spec.delay_s else ", latency 5 us assumed"),
    )

"""Links beyond this machine: published rates, and a calibrated link scaled to another rate.

`scaled_to` is a calibrated shaped link carried to another rate: every bandwidth (each size
segment's too) scaled by the rate ratio, its latencies kept, and the tbf bucket that rate gets.
`bracketing` is what the predicted break-even and the report's model curves use between and
around the calibrated links: the two calibrated links on either side of the rate, each scaled
to it and weighted linearly in log-rate (a rate at a calibrated link is that link; beyond the
slowest or fastest, the nearest one). Taking only the nearest link made the curve jump halfway
between two links whose efficiencies differ (near 100 Mbit/s between 200 and 50 Mbit/s).

A published link is its nominal rate per direction and a latency per message; a collective
is taken to reach that rate. Latencies are the vendors' port-to-port or the transport's
typical figures; a collective's per-step latency on a real stack (NCCL, gloo's TCP) is
larger, which is why a calibration on the user's cluster should replace them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from bench.network.spec import parse_network, tbf_burst_bytes
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


def _shaped(calibrated: Mapping[str, LinkModel], rates: Mapping[str, float]) -> list[str]:
    shaped = [name for name in calibrated if rates.get(name)]
    if not shaped:
        raise ValueError("no calibrated link with a known rate to scale from")
    return shaped


def _carried(name: str, rate_bps: float, calibrated: Mapping[str, LinkModel], rates: Mapping[str, float]) -> LinkModel:
    return calibrated[name].scaled(rate_bps / rates[name], f"{name} scaled to {rate_bps:g} bit/s", tbf_burst_bytes(rate_bps))


def scaled_to(rate_bps: float, calibrated: Mapping[str, LinkModel], rates: Mapping[str, float]) -> LinkModel:
    """The calibrated shaped link nearest `rate_bps` in log-rate, scaled to it (module docstring); ValueError without one."""
    near = min(_shaped(calibrated, rates), key=lambda name: abs(math.log(rates[name] / rate_bps)))
    return _carried(near, rate_bps, calibrated, rates)


def bracketing(rate_bps: float, calibrated: Mapping[str, LinkModel], rates: Mapping[str, float]) -> tuple[tuple[LinkModel, float], ...]:
    """(link scaled to `rate_bps`, weight) for the calibrated shaped links on either side of it, weights summing
    to 1, linear in log-rate; one link at weight 1 at or beyond the calibrated rates. ValueError without one."""
    by_rate = sorted(_shaped(calibrated, rates), key=lambda name: rates[name])
    below = [n for n in by_rate if rates[n] <= rate_bps]
    above = [n for n in by_rate if rates[n] > rate_bps]
    if not below or not above:
        return ((_carried((below or above)[-1 if below else 0], rate_bps, calibrated, rates), 1.0),)
    lo, hi = below[-1], above[0]
    w_hi = math.log(rate_bps / rates[lo]) / math.log(rates[hi] / rates[lo])
    out = ((_carried(lo, rate_bps, calibrated, rates), 1.0 - w_hi), (_carried(hi, rate_bps, calibrated, rates), w_hi))
    return tuple((link, w) for link, w in out if w > 0)

"""Alpha and beta of a link per collective kind, by least squares on timed single collectives.

Each sample is one `collectives`-workload trial: op, ranks n, message S and its median call
time t. Under an algorithm its alpha-beta terms are t = L(op, n) alpha + W(op, n, S) / beta
(`collectives.terms`), linear in (alpha, 1/beta). Each equation is weighted by 1/sqrt(t), between
the absolute residual (the large calls alone would set both unknowns) and the relative one
(which a shaped link's small calls mislead: tc's token bucket lets a 16 KB call through at
line speed, so at 50 Mbit/s the relative fit put beta at 64 Mbit/s and the steps 25% short;
weighted so, 45 Mbit/s, as the 8 MB calls run). Both unknowns are kept non-negative: a
negative alpha (bytes explain everything) is refitted with alpha = 0.

One line over all sizes misses where a link changes regime with size: at 50 Mbit/s gloo's
all_gather runs 8 MB calls at 58% of the rate and 256 KB calls at 94%, so the one fit put a
370 KB call at twice its time. `segments` therefore also fits alpha and beta between each
pair of adjacent calibrated sizes (exact through both when they hold one sample each); a call
is priced on the segment around its size, and beyond the calibrated sizes on the nearest one.

A kind is an op and the type it carries (`kind`): gloo sums an fp16 buffer at its own speed
(1.48 M elements all-reduced at 2 ranks over loopback: 4.5 ms in fp16, 2-3 ms for fp32 of the
same bytes), so where the calibration timed a kind in fp16 its calls are priced on that fit; a
kind timed only in fp32 prices every type's calls (`step.LinkModel.of`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from bench.predict.collectives import Algorithm, terms


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed collective: `op` on `n` ranks with message `msg_bytes` took `seconds` per call."""

    op: str
    n: int
    msg_bytes: float
    seconds: float
    dtype: str = "float32"


def kind(op: str, dtype: str = "float32") -> str:
    """The calibration's key of `op` carrying `dtype`: the op itself for float32, else `op:dtype`."""
    return op if dtype == "float32" else f"{op}:{dtype}"


@dataclass(frozen=True, slots=True)
class AlphaBeta:
    """A fitted link for one collective kind: latency per step (s), bandwidth (B/s), and the fit's quality."""

    alpha_s: float
    beta_Bps: float
    samples: int
    max_rel_error: float  # max |fit - measured| / measured over the samples

    def seconds(self, op: str, msg_bytes: float, n: int, algorithm: Algorithm = "ring") -> float:
        return terms(op, msg_bytes, n, algorithm).seconds(self.alpha_s, self.beta_Bps)


def fit(samples: Iterable[Sample], algorithm: Algorithm = "gloo") -> AlphaBeta:
    """Least-squares alpha, beta over `samples` (two or more, at two or more sizes); ValueError otherwise."""
    rows = [(terms(s.op, s.msg_bytes, s.n, algorithm), s.seconds) for s in samples]
    if len({t.serial_bytes for t, _ in rows}) < 2:
        raise ValueError("alpha and beta need samples at two or more message sizes")
    w = [1 / y**0.5 for _, y in rows]
    a = np.array([[t.latency_steps * k, t.serial_bytes * k] for (t, _), k in zip(rows, w)])
    b = np.array([y * k for (_, y), k in zip(rows, w)])
    (alpha, inv_beta), *_ = np.linalg.lstsq(a, b, rcond=None)
    if alpha < 0:
        alpha, inv_beta = 0.0, float(a[:, 1] @ b / (a[:, 1] @ a[:, 1]))
    if inv_beta <= 0:
        raise ValueError("the samples do not grow with message size: no bandwidth can be fitted")
    err = max(abs(t.seconds(alpha, 1 / inv_beta) - y) / y for t, y in rows)
    return AlphaBeta(float(alpha), float(1 / inv_beta), len(rows), float(err))


def fit_by_op(samples: Iterable[Sample], algorithm: Algorithm = "gloo") -> dict[str, AlphaBeta]:
    """One `fit` per collective kind among `samples`, leaving out kinds measured at fewer than two sizes."""
    return {op: fit(group, algorithm) for op, group in _by_op(samples).items()}


def _by_op(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    """Samples per collective kind, by kind, for kinds measured at two or more message sizes."""
    by_op: dict[str, list[Sample]] = {}
    for s in samples:
        by_op.setdefault(kind(s.op, s.dtype), []).append(s)
    return {op: group for op, group in sorted(by_op.items()) if len({s.msg_bytes for s in group}) > 1}


@dataclass(frozen=True, slots=True)
class Segment:
    """Alpha and beta fitted between two adjacent calibrated message sizes (nccl-tests S, bytes)."""

    low_bytes: float
    high_bytes: float
    fit: AlphaBeta


def segments(samples: Iterable[Sample], algorithm: Algorithm = "gloo") -> tuple[Segment, ...]:
    """One `fit` per pair of adjacent message sizes among `samples` (one collective kind), by size.

    A pair whose larger size ran no slower than its smaller one (noise) has no bandwidth of its
    own: it takes the fit over every size."""
    group = list(samples)
    sizes = sorted({s.msg_bytes for s in group})
    out = []
    for lo, hi in zip(sizes, sizes[1:]):
        try:
            ab = fit([s for s in group if s.msg_bytes in (lo, hi)], algorithm)
        except ValueError:
            ab = fit(group, algorithm)
        out.append(Segment(lo, hi, ab))
    return tuple(out)


def segment_for(segs: tuple[Segment, ...], msg_bytes: float) -> AlphaBeta:
    """The fit of the segment around `msg_bytes`; below or above every segment, the nearest one."""
    for seg in segs:
        if msg_bytes <= seg.high_bytes:
            return seg.fit
    return segs[-1].fit


def segments_by_op(samples: Iterable[Sample], algorithm: Algorithm = "gloo") -> dict[str, tuple[Segment, ...]]:
    """`segments` per collective kind, for kinds measured at two or more sizes."""
    return {op: segments(group, algorithm) for op, group in _by_op(samples).items()}

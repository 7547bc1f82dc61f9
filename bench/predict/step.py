"""One training step, predicted: compute + each collective's alpha-beta time + codec - overlap.

    t_step = compute + sum over calls (L(op, n) alpha_op + W(op, n, S) / beta_op) + codec - overlap

`compute` is measured per strategy and model; the calls (op, message bytes, calls per step)
come from the cost model or the comm table; alpha and beta per collective kind come from a
calibration on the link (`calibrate.fit_by_op`) or from a published link figure (`links`);
`codec` is the encode/decode time of a compressing hook; `overlap` is the communication
hidden behind backward, at most the communication itself.

Two terms belong to the link rather than to the textbook:
- a calibrated link prices each call on the alpha-beta segment around its message size
  (`calibrate.segments`), where it has one; else on the fit over every size;
- a link shaped by a token bucket (tc tbf) of B bytes starts each step with a full bucket,
  because the forward pass leaves it idle for longer than B / rate (4 ms at 134 Mbit/s and
  up, 10.7 ms at 50 Mbit/s; gpt2-tiny's forward takes ~30 ms here). The step's first B bytes
  then pass at the veth's own speed: the communication is W/beta - min(B, W)/beta, with W the
  step's serial bytes and beta their bytes-weighted bandwidth. A call between buckets of one
  step may find some tokens again; that is not modelled, so this is the smallest saving.
  A physical link has no bucket (B = 0).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bench.predict.calibrate import AlphaBeta, Segment, kind, segment_for
from bench.predict.collectives import Algorithm, terms


@dataclass(frozen=True, slots=True)
class Call:
    """`per_step` calls of `op` per step, `msg_bytes` (nccl-tests S) each, carrying `dtype`."""

    op: str
    msg_bytes: float
    per_step: float = 1.0
    dtype: str = "float32"


@dataclass(frozen=True, slots=True)
class LinkModel:
    """Alpha-beta per collective kind on one link; ops without their own fit use `default`."""

    name: str
    default: AlphaBeta
    by_op: Mapping[str, AlphaBeta] = field(default_factory=dict)
    source: str = ""
    segments: Mapping[str, tuple[Segment, ...]] = field(default_factory=dict)  # per op, by message size
    burst_bytes: float = 0.0  # the token bucket of a shaped link, full at the start of a step

    def of(self, op: str, msg_bytes: float | None = None, dtype: str = "float32") -> AlphaBeta:
        """The fit for `op` carrying `dtype` (reduce_scatter runs as all_reduce on gloo; a type without its own fit
        takes the op's float32 one); at `msg_bytes`, its segment's."""
        op = "all_reduce" if op == "reduce_scatter" and op not in self.by_op else op
        key = kind(op, dtype) if kind(op, dtype) in self.by_op else op
        if msg_bytes is not None and self.segments.get(key):
            return segment_for(self.segments[key], msg_bytes)
        return self.by_op.get(key, self.default)

    def scaled(self, factor: float, name: str, burst_bytes: float) -> LinkModel:
        """This link with every bandwidth times `factor` and the latencies kept: the same stack at another rate."""
        def sc(ab: AlphaBeta) -> AlphaBeta:
            return AlphaBeta(ab.alpha_s, ab.beta_Bps * factor, ab.samples, ab.max_rel_error)

        segs = {op: tuple(Segment(g.low_bytes, g.high_bytes, sc(g.fit)) for g in v) for op, v in self.segments.items()}
        by_op = {op: sc(ab) for op, ab in self.by_op.items()}
        return LinkModel(name, sc(self.default), by_op, f"{self.source}, bandwidth x{factor:.3g}", segs, burst_bytes)


@dataclass(frozen=True, slots=True)
class StepPrediction:
    """The predicted step and its terms, seconds."""

    compute_s: float
    comm_s: float
    codec_s: float
    overlap_s: float

    @property
    def total_s(self) -> float:
        return self.compute_s + self.comm_s + self.codec_s - self.overlap_s


def comm_seconds(calls: Iterable[Call], n: int, link: LinkModel, algorithm: Algorithm = "gloo") -> float:
    """Sum of every call's alpha-beta time per step, less what the link's full bucket lets through."""
    total = serial = byte_time = 0.0
    for c in calls:
        ab = link.of(c.op, c.msg_bytes, c.dtype)
        t = terms(c.op, c.msg_bytes, n, algorithm)
        total += c.per_step * t.seconds(ab.alpha_s, ab.beta_Bps)
        serial += c.per_step * t.serial_bytes
        byte_time += c.per_step * t.serial_bytes / ab.beta_Bps
    if link.burst_bytes > 0 and serial > 0:
        total -= min(link.burst_bytes, serial) * byte_time / serial
    return total


def predict(
    *, compute_s: float, calls: Iterable[Call], n: int, link: LinkModel, algorithm: Algorithm = "gloo",
    codec_s: float = 0.0, overlap_s: float = 0.0,
) -> StepPrediction:  # fmt: skip
    """The step on `link` at `n` ranks; the overlap hides at most the whole communication."""
    comm = comm_seconds(calls, n, link, algorithm)
    return StepPrediction(compute_s, comm, codec_s, comm - exposed(comm, overlap_s))


def exposed(comm_s: float, hidden_s: float) -> float:
    """What of `comm_s` the step waits for, when `hidden_s` of it ran behind compute (at most all of it)."""
    return comm_s - min(max(hidden_s, 0.0), comm_s)

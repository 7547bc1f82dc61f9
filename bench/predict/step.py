"""One training step, predicted: compute + each collective's alpha-beta time + codec - overlap.

    t_step = compute + sum over calls (L(op, n) alpha_op + W(op, n, S) / beta_op) + codec - overlap

`compute` is measured per strategy and model; the calls (op, message bytes, calls per step)
come from the cost model or the comm table; alpha and beta per collective kind come from a
calibration on the link (`calibrate.fit_by_op`) or from a published link figure (`links`);
`codec` is the encode/decode time of a compressing hook; `overlap` is the communication
hidden behind backward, at most the communication itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bench.predict.calibrate import AlphaBeta
from bench.predict.collectives import Algorithm, terms


@dataclass(frozen=True, slots=True)
class Call:
    """`per_step` calls of `op` per step, `msg_bytes` (nccl-tests S) each."""

    op: str
    msg_bytes: float
    per_step: float = 1.0


@dataclass(frozen=True, slots=True)
class LinkModel:
    """Alpha-beta per collective kind on one link; ops without their own fit use `default`."""

    name: str
    default: AlphaBeta
    by_op: Mapping[str, AlphaBeta] = field(default_factory=dict)
    source: str = ""

    def of(self, op: str) -> AlphaBeta:
        return self.by_op.get("all_reduce" if op == "reduce_scatter" and op not in self.by_op else op, self.default)


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
    """Sum of every call's alpha-beta time per step."""
    total = 0.0
    for c in calls:
        ab = link.of(c.op)
        total += c.per_step * terms(c.op, c.msg_bytes, n, algorithm).seconds(ab.alpha_s, ab.beta_Bps)
    return total


def predict(
    *, compute_s: float, calls: Iterable[Call], n: int, link: LinkModel, algorithm: Algorithm = "gloo",
    codec_s: float = 0.0, overlap_s: float = 0.0,
) -> StepPrediction:  # fmt: skip
    """The step on `link` at `n` ranks; the overlap hides at most the whole communication."""
    comm = comm_seconds(calls, n, link, algorithm)
    return StepPrediction(compute_s, comm, codec_s, min(max(overlap_s, 0.0), comm))

"""Validation on held-out links: fit compute on some links, predict the step on the others, state the error.

An `Observed` trial is one strategy of one case on one link, with its measured step (p50) and
its calls per step. A fold holds out a set of links: each strategy's compute is the median,
over its trials on the other links, of measured step minus predicted communication; the
held-out trials are then predicted from that compute and their own link's calibration, and
never seen before. `mape` summarises a fold's absolute percentage errors.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bench.predict.step import Call, LinkModel, StepPrediction, comm_seconds, predict


@dataclass(frozen=True, slots=True)
class Observed:
    """One measured trial: `strategy` of `case` on `link` (rate null: unshaped), n ranks, its step p50 (s)."""

    case: str
    strategy: str
    link: str
    rate_bps: float | None
    n: int
    measured_s: float
    calls: tuple[Call, ...]
    by_round: tuple[tuple[str, int, float], ...] = ()  # (run, round, step p50) of each launch made in rounds


@dataclass(frozen=True, slots=True)
class Outcome:
    """A held-out trial's prediction and its error ((predicted - measured) / measured)."""

    trial: Observed
    predicted: StepPrediction
    compute_from: tuple[str, ...]

    @property
    def error(self) -> float:
        return (self.predicted.total_s - self.trial.measured_s) / self.trial.measured_s


@dataclass(frozen=True, slots=True)
class Compute:
    """A strategy's compute: the median residual over its calibration links, and the residuals' range."""

    seconds: float
    low_s: float
    high_s: float
    links: tuple[str, ...]


def compute_of(trials: Iterable[Observed], links: Mapping[str, LinkModel]) -> Compute:
    """Measured step minus predicted communication, over `trials` (one strategy); ValueError if none."""
    res = {t.link: t.measured_s - comm_seconds(t.calls, t.n, links[t.link]) for t in trials}
    if not res:
        raise ValueError("no calibration trial to take the compute from")
    vals = list(res.values())
    return Compute(statistics.median(vals), min(vals), max(vals), tuple(sorted(res)))


def fold(observed: Sequence[Observed], links: Mapping[str, LinkModel], holdout: set[str]) -> list[Outcome]:
    """Predict every trial on a `holdout` link from its strategy's compute on the other links."""
    out = []
    for key in sorted({(o.case, o.strategy) for o in observed}):
        mine = [o for o in observed if (o.case, o.strategy) == key and o.link in links]
        calib = [o for o in mine if o.link not in holdout]
        if not calib:
            continue
        c = compute_of(calib, links)
        for o in (o for o in mine if o.link in holdout):
            out.append(Outcome(o, predict(compute_s=c.seconds, calls=o.calls, n=o.n, link=links[o.link]), c.links))
    return out


def mape(outcomes: Iterable[Outcome]) -> float:
    """Median absolute percentage error (as a fraction) of `outcomes`; nan for none."""
    errs = [abs(o.error) for o in outcomes]
    return statistics.median(errs) if errs else float("nan")


def leave_one_out(observed: Sequence[Observed], links: Mapping[str, LinkModel]) -> dict[str, list[Outcome]]:
    """Every fold that holds out one link."""
    return {link: fold(observed, links, {link}) for link in sorted({o.link for o in observed if o.link in links})}

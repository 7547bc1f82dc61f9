"""Validation on held-out links: fit compute on some links, predict the step on the others, state the error.

An `Observed` trial is one strategy of one case on one link, with its measured step (p50) and
its calls per step. A fold holds out a set of links: each strategy's compute is the
inverse-variance weighted mean, over its trials on the other links, of the residual
r = measured step - predicted communication; the held-out trials are then predicted from that
compute and their own link's calibration, and never seen before. `mape` summarises a fold's
absolute percentage errors.

A residual is as uncertain as what it subtracts and what it is subtracted from:

    var(r) = (COMM_REL_ERROR * comm)^2 + (cv * step)^2

with `comm` the predicted communication, `step` the measured step and `cv` the relative
spread of one launch, pooled over the strategy's calibration trials (`pooled_cv`;
`DEFAULT_CV` where none ran twice). A residual on a slow link, where communication is most
of the step, weighs little beside one on a fast link: the median of two residuals, one of
them communication-bound, took a 7% communication error there for the compute of every link
(4-node fp32 on the veth, predicted +23% in the blind check). The spread is pooled because
three launches estimate a trial's own spread with 2 degrees of freedom, where E[1/s^2] is
infinite: a trial whose launches agreed by chance took nearly all the weight. On three
simulated sweeps of a true model (80 cases x 6 links, launches off by 10%), per-trial weights
gave 4-12% more held-out MAPE than pooled ones, which sit on the noise floor below (the
test of the floor in tests/unit/test_predict.py).

`noise_floor` is the held-out error the measurement alone gives, with a true model: each
held-out step is the median of its k launches, each off by a relative normal error of the
pooled launch spread cv, and is predicted from a compute averaged over m calibration links
measured alike. `simulated_floor` draws such sweeps of N trials (fixed seed) and returns the
median absolute error of ratio prediction / measurement - 1 and the median, over sweeps,
of the worst trial. A model whose error is near this floor cannot be told from a true one on
these rows; the floor falls as 1 / sqrt(k).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

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
    runs: tuple[str, ...] = ()  # the runs (sweeps) its rows came from


@dataclass(frozen=True, slots=True)
class Outcome:
    """A held-out trial's prediction and its error ((predicted - measured) / measured)."""

    trial: Observed
    predicted: StepPrediction
    compute_from: tuple[str, ...]

    @property
    def error(self) -> float:
        return (self.predicted.total_s - self.trial.measured_s) / self.trial.measured_s


COMM_REL_ERROR = 0.10  # the communication model's error on a train step, relative (docs/predict.md: up to ~10% on the slow links)
DEFAULT_CV = 0.05  # a step's launch-to-launch spread where a trial ran once (the host's CV at 1.5 s windows is ~6%)


@dataclass(frozen=True, slots=True)
class Compute:
    """A strategy's compute: the weighted mean residual over its calibration links, and the residuals' range."""

    seconds: float
    low_s: float
    high_s: float
    links: tuple[str, ...]


def launch_cv(t: Observed) -> float:
    """The relative spread (sample stdev / mean) of `t`'s launches' p50s; `DEFAULT_CV` with fewer than two."""
    p50s = [p for _, _, p in t.by_round]
    return statistics.stdev(p50s) / statistics.fmean(p50s) if len(p50s) > 1 else DEFAULT_CV


def pooled_cv(trials: Iterable[Observed]) -> float:
    """The root mean square of the launch spreads of `trials` that ran twice or more; `DEFAULT_CV` if none did."""
    cvs = [launch_cv(t) for t in trials if len(t.by_round) > 1]
    return statistics.fmean(c * c for c in cvs) ** 0.5 if cvs else DEFAULT_CV


def residual_weight(t: Observed, comm_s: float, cv: float) -> float:
    """1 / var(residual) of `t` at launch spread `cv` (module docstring); finite for a step with neither spread nor communication."""
    var = (COMM_REL_ERROR * comm_s) ** 2 + (cv * t.measured_s) ** 2
    return 1.0 / max(var, 1e-18)


def compute_of(trials: Iterable[Observed], links: Mapping[str, LinkModel]) -> Compute:
    """Measured step minus predicted communication, weighted over `trials` (one strategy); ValueError if none."""
    trials = list(trials)
    cv = pooled_cv(trials)
    comm = {t.link: comm_seconds(t.calls, t.n, links[t.link]) for t in trials}
    res = {t.link: (t.measured_s - comm[t.link], residual_weight(t, comm[t.link], cv)) for t in trials}
    if not res:
        raise ValueError("no calibration trial to take the compute from")
    vals = [r for r, _ in res.values()]
    mean = sum(r * w for r, w in res.values()) / sum(w for _, w in res.values())
    return Compute(mean, min(vals), max(vals), tuple(sorted(res)))


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


@dataclass(frozen=True, slots=True)
class NoiseFloor:
    """The held-out error a true model would show on these measurements (module docstring)."""

    cv: float  # pooled relative spread of one launch's step p50
    launches: int  # launches per held-out trial (median)
    calibration_links: int  # links each compute comes from (median)
    trials: int
    mape: float
    worst: float


@cache
def simulated_floor(cv: float, launches: int, calibration_links: int, trials: int, sweeps: int = 2000) -> tuple[float, float]:
    """(MAPE, worst trial's |error|, on median over sweeps) of a true model on launches off by N(0, cv) each."""
    rng = np.random.default_rng(0)
    steps = np.median(1 + cv * rng.standard_normal((sweeps, trials, calibration_links + 1, launches)), axis=3)
    err = np.abs(steps[..., 1:].mean(axis=2) / steps[..., 0] - 1)
    return float(np.median(err)), float(np.median(err.max(axis=1)))


def noise_floor(outcomes: Sequence[Outcome]) -> NoiseFloor | None:
    """The floor of `outcomes` from their launches' spread; None where no trial ran two launches."""
    trials = [o.trial for o in outcomes]
    if not any(len(t.by_round) > 1 for t in trials):
        return None
    cv = round(pooled_cv(trials), 4)  # rounded: the simulation is cached by its arguments
    k = int(statistics.median(max(1, len(t.by_round)) for t in trials))
    m = max(1, int(statistics.median(len(o.compute_from) for o in outcomes)))
    return NoiseFloor(cv, k, m, len(outcomes), *simulated_floor(cv, k, m, len(outcomes)))

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
simulated sweeps of a true model (80 cases x 6 links, launches off by 10%; a one-off script,
findings/2026-12-06-noise-floor.md), per-trial weights gave 4-12% more held-out MAPE than
pooled ones; pooled ones sit on the noise floor below (tests/unit/test_predict.py).

`noise_floor` is the held-out error the measurement alone gives, with a true model: each
held-out step is the median of its k launches, and it is predicted from a compute averaged
over m calibration links measured alike. Each launch is off from its trial's true step by a
relative error drawn from the launches themselves: every held-out trial's launches' relative
deviations from their mean, scaled by sqrt(k / (k - 1)) to one launch's spread
(`launch_deviations`). So the floor keeps the launches' own shape: slow outlier launches,
which a normal error of the same standard deviation would spread over every launch, and
which a median of three mostly ignores. `simulated_floor` draws such sweeps of N trials
(fixed seed) and returns the median absolute error of prediction / measurement - 1 and the
median, over sweeps, of the worst trial. A model whose error is near this floor cannot be
told from a true one on these rows; the floor falls as 1 / sqrt(k). It takes launches as
independent: what moves every trial of one round alike cancels between a held-out trial and
its calibration, and the floor does not credit that.
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


@dataclass(frozen=True, slots=True)
class CodecCost:
    """A strategy's compute less its baseline's: its encode, decode and hook work per step (s, with the range that the
    two computes' residual ranges allow), over the baseline's gradient elements (its all-reduced fp32 bytes / 4)."""

    case: str
    strategy: str
    seconds: float
    low_s: float
    high_s: float
    elements: float

    @property
    def per_element_s(self) -> float:
        return self.seconds / self.elements


def codec_costs(observed: Sequence[Observed], links: Mapping[str, LinkModel], baseline: str) -> list[CodecCost]:
    """Each strategy's `CodecCost` against `baseline` in every case that measured both on calibrated links."""
    out = []
    for case in sorted({o.case for o in observed}):
        mine = [o for o in observed if o.case == case and o.link in links]
        base = [o for o in mine if o.strategy == baseline]
        elements = sum(c.msg_bytes * c.per_step for c in base[0].calls if c.op == "all_reduce") / 4 if base else 0.0
        if elements <= 0:
            continue
        cb = compute_of(base, links)
        for strategy in sorted({o.strategy for o in mine} - {baseline}):
            cc = compute_of([o for o in mine if o.strategy == strategy], links)
            out.append(CodecCost(case, strategy, cc.seconds - cb.seconds, cc.low_s - cb.high_s, cc.high_s - cb.low_s, elements))
    return out


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


def launch_deviations(t: Observed) -> list[float]:
    """Each launch's relative deviation from the mean of `t`'s launches, times sqrt(k / (k - 1)); none below two launches."""
    p50s = [p for _, _, p in t.by_round]
    k = len(p50s)
    if k < 2:
        return []
    mean = statistics.fmean(p50s)
    return [(p / mean - 1) * (k / (k - 1)) ** 0.5 for p in p50s]


MAX_DRAWS = 6_000_000  # launches drawn by one `simulated_floor` (48 MB of float64)


@cache
def simulated_floor(deviations: tuple[float, ...], launches: int, calibration_links: int, trials: int) -> tuple[float, float]:
    """(MAPE, worst trial's |error| on median over sweeps) of a true model whose launches are off by `deviations`, drawn."""
    per_sweep = trials * (calibration_links + 1) * launches
    sweeps = max(100, min(2000, MAX_DRAWS // per_sweep))
    draws = np.random.default_rng(0).choice(np.asarray(deviations), (sweeps, trials, calibration_links + 1, launches))
    steps = np.median(1 + draws, axis=3)
    err = np.abs(steps[..., 1:].mean(axis=2) / steps[..., 0] - 1)
    return float(np.median(err)), float(np.median(err.max(axis=1)))


def noise_floor(outcomes: Sequence[Outcome]) -> NoiseFloor | None:
    """The floor of `outcomes` from their own launches; None where no trial ran two launches."""
    trials = [o.trial for o in outcomes]
    deviations = tuple(d for t in trials for d in launch_deviations(t))
    if not deviations:
        return None
    k = int(statistics.median(max(1, len(t.by_round)) for t in trials))
    m = max(1, int(statistics.median(len(o.compute_from) for o in outcomes)))
    return NoiseFloor(pooled_cv(trials), k, m, len(outcomes), *simulated_floor(deviations, k, m, len(outcomes)))

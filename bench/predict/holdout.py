"""Validation on held-out links: fit compute on some links, predict the step on the others, state the error.

An `Observed` trial is one strategy of one case on one link, with its measured step (p50) and
its calls per step. A fold holds out a set of links: each strategy's compute is the
inverse-variance weighted mean, over its trials on the other links, of the residual
r = measured step - predicted communication; the held-out trials are then predicted from that
compute and their own link's calibration, and never seen before. `mape` summarises a fold's
absolute percentage errors. That is the `fitted` way (`COMPUTE_WAYS`); the `replayed` way
fits nothing per strategy: a hook's step is its baseline's compute plus its codec, replayed
apart from the link in the trial itself (`codec_s_per_step`,
bench/strategies/grad_compression/replay.py), plus its own communication.

The overlap (`OVERLAP_WAYS`, `profiled` by default) is the communication a strategy's profiled
steps hid behind compute (`comm_hidden_s_per_step`: collective time in flight while the main
thread computed): only the exposed part, comm - min(hidden, comm), adds to the step. A
calibration trial's residual subtracts its own exposed part; a held-out trial is predicted with
the median hidden time of its strategy's calibration trials, never its own. Rows without a
profiler pass hide nothing, which is the `none` way.

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

from bench.predict.step import Call, LinkModel, StepPrediction, comm_seconds, exposed, predict


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
    codec_s: float | None = None  # its hook's codec per step, replayed apart from the link (`codec_s_per_step`); None: not measured
    hidden_s: float | None = None  # communication its profiled steps hid behind compute (`comm_hidden_s_per_step`); None: not profiled


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
class Codec:
    """A hook's replayed codec per step (s): the median over trials, and their lowest and highest."""

    seconds: float
    low_s: float
    high_s: float


@dataclass(frozen=True, slots=True)
class Compute:
    """A strategy's compute: the weighted mean residual over its calibration links, and the residuals' range.

    With `codec` (the `replayed` way), the compute is its baseline's and the codec is a term apart.
    `hidden_s` is the strategy's communication hidden behind compute, for the links it is predicted on.
    """

    seconds: float
    low_s: float
    high_s: float
    links: tuple[str, ...]
    codec: Codec | None = None
    hidden_s: float = 0.0

    @property
    def codec_s(self) -> float:
        return self.codec.seconds if self.codec else 0.0


# How a strategy's compute is taken (`commbench predict --compute`):
# - fitted: from its own trials' residuals, codec and hook work included (one compute per strategy);
# - replayed: its baseline's compute, plus its codec as replayed apart from the link (`codec_s_per_step`):
#   nothing fitted per strategy; a strategy whose rows have no replayed codec is not predicted.
COMPUTE_WAYS = ("fitted", "replayed")
# Whether the profiled overlap is subtracted (module docstring): profiled, or none (every collective exposed).
OVERLAP_WAYS = ("profiled", "none")


@dataclass(frozen=True, slots=True)
class Way:
    """How the model takes what it measures per strategy rather than derives: its compute and its overlap."""

    compute: str = "fitted"
    overlap: str = "profiled"

    def __post_init__(self) -> None:
        if self.compute not in COMPUTE_WAYS:
            raise ValueError(f"unknown compute way {self.compute!r} (known: {', '.join(COMPUTE_WAYS)})")
        if self.overlap not in OVERLAP_WAYS:
            raise ValueError(f"unknown overlap way {self.overlap!r} (known: {', '.join(OVERLAP_WAYS)})")


def hidden_of(trials: Iterable[Observed]) -> float:
    """The median hidden communication of `trials` that were profiled; 0 where none was."""
    got = [t.hidden_s for t in trials if t.hidden_s is not None]
    return statistics.median(got) if got else 0.0


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


def compute_of(trials: Iterable[Observed], links: Mapping[str, LinkModel], overlap: bool = True) -> Compute:
    """Measured step minus predicted exposed communication, weighted over `trials` (one strategy); ValueError if none.

    With `overlap`, each trial's own hidden time is subtracted from its communication (the strategy's
    median where it was not profiled), and the compute carries that median for its predictions.
    """
    trials = list(trials)
    cv = pooled_cv(trials)
    hidden = hidden_of(trials) if overlap else 0.0

    def hid(t: Observed) -> float:
        return t.hidden_s if overlap and t.hidden_s is not None else hidden

    comm = {t.link: comm_seconds(t.calls, t.n, links[t.link]) for t in trials}
    res = {t.link: (t.measured_s - exposed(comm[t.link], hid(t)), residual_weight(t, comm[t.link], cv)) for t in trials}
    if not res:
        raise ValueError("no calibration trial to take the compute from")
    vals = [r for r, _ in res.values()]
    mean = sum(r * w for r, w in res.values()) / sum(w for _, w in res.values())
    return Compute(mean, min(vals), max(vals), tuple(sorted(res)), hidden_s=hidden)


def replayed_codec(trials: Iterable[Observed]) -> Codec | None:
    """The median, lowest and highest replayed codec of `trials`; None where none has one."""
    got = [t.codec_s for t in trials if t.codec_s is not None]
    return Codec(statistics.median(got), min(got), max(got)) if got else None


def strategy_compute(
    observed: Sequence[Observed], links: Mapping[str, LinkModel], case: str, strategy: str, *,
    exclude: set[str] = frozenset(), way: Way = Way(), baseline: str = "baseline",
) -> Compute | None:  # fmt: skip
    """`strategy`'s compute in `case` from its trials on calibrated links outside `exclude`, the `way` asked;
    None where those trials cannot give it."""
    overlap = way.overlap == "profiled"

    def calib(name: str) -> list[Observed]:
        return [o for o in observed if o.case == case and o.strategy == name and o.link in links and o.link not in exclude]

    mine = calib(strategy)
    if not mine:
        return None
    if way.compute == "fitted" or strategy == baseline:
        return compute_of(mine, links, overlap)
    base, codec = calib(baseline), replayed_codec(mine)
    if not base or codec is None:
        return None
    cb = compute_of(base, links, overlap)
    return Compute(cb.seconds, cb.low_s, cb.high_s, cb.links, codec, hidden_of(mine) if overlap else 0.0)


def difference(base: Compute, cand: Compute) -> tuple[float, float, float]:
    """`cand`'s step less `base`'s outside communication (s): its value and the range its measurements allow.

    Replayed, the compute is shared and the codec's own spread is the range; fitted, the two
    residual ranges are.
    """
    if cand.codec is not None:
        return cand.codec.seconds - base.codec_s, cand.codec.low_s - base.codec_s, cand.codec.high_s - base.codec_s
    return cand.seconds - base.seconds, cand.low_s - base.high_s, cand.high_s - base.low_s


@dataclass(frozen=True, slots=True)
class CodecCost:
    """A strategy's compute less its baseline's (s, with the range the two computes' residual ranges allow), its
    replayed codec where measured, over the baseline's gradient elements (its all-reduced fp32 bytes / 4)."""

    case: str
    strategy: str
    seconds: float
    low_s: float
    high_s: float
    elements: float
    replayed: Codec | None = None

    @property
    def per_element_s(self) -> float:
        return self.seconds / self.elements


def codec_costs(observed: Sequence[Observed], links: Mapping[str, LinkModel], baseline: str, overlap: bool = True) -> list[CodecCost]:
    """Each strategy's `CodecCost` against `baseline` in every case that measured both on calibrated links
    (computes fitted, with each one's profiled overlap or without)."""
    out = []
    for case in sorted({o.case for o in observed}):
        mine = [o for o in observed if o.case == case and o.link in links]
        base = [o for o in mine if o.strategy == baseline]
        elements = sum(c.msg_bytes * c.per_step for c in base[0].calls if c.op == "all_reduce") / 4 if base else 0.0
        if elements <= 0:
            continue
        cb = compute_of(base, links, overlap)
        for strategy in sorted({o.strategy for o in mine} - {baseline}):
            trials = [o for o in mine if o.strategy == strategy]
            d = difference(cb, compute_of(trials, links, overlap))
            out.append(CodecCost(case, strategy, *d, elements, replayed_codec(trials)))
    return out


def fold(observed: Sequence[Observed], links: Mapping[str, LinkModel], holdout: set[str], way: Way = Way(),
         baseline: str = "baseline") -> list[Outcome]:  # fmt: skip
    """Predict every trial on a `holdout` link from its strategy's compute on the other links, taken `way`."""
    out = []
    for case, strategy in sorted({(o.case, o.strategy) for o in observed}):
        c = strategy_compute(observed, links, case, strategy, exclude=holdout, way=way, baseline=baseline)
        if c is None:
            continue
        for o in (o for o in observed if (o.case, o.strategy) == (case, strategy) and o.link in holdout and o.link in links):
            p = predict(compute_s=c.seconds, calls=o.calls, n=o.n, link=links[o.link], codec_s=c.codec_s, overlap_s=c.hidden_s)
            out.append(Outcome(o, p, c.links))
    return out


def mape(outcomes: Iterable[Outcome]) -> float:
    """Median absolute percentage error (as a fraction) of `outcomes`; nan for none."""
    errs = [abs(o.error) for o in outcomes]
    return statistics.median(errs) if errs else float("nan")


def leave_one_out(observed: Sequence[Observed], links: Mapping[str, LinkModel], way: Way = Way()) -> dict[str, list[Outcome]]:
    """Every fold that holds out one link."""
    return {link: fold(observed, links, {link}, way) for link in sorted({o.link for o in observed if o.link in links})}


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

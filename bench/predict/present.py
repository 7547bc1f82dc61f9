"""What `predict` and `advise` print: held-out errors, break-evens, and the ranked advice (its report section: bench/reports/advice.py).

Reads results through `rows` (pandas); every number it shows comes from the pure modules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.errors import BenchError
from bench.predict import advise as adv
from bench.predict import breakeven, holdout, links, rows
from bench.predict.holdout import Observed, Outcome
from bench.predict.request import AdviseRequest
from bench.predict.shapes import ModelShape
from bench.predict.step import LinkModel, comm_seconds, exposed

BASELINE = "baseline"


def _ms(s: float) -> str:
    return f"{s * 1e3:.1f}"


def _folds(obs: list[Observed], models: dict[str, LinkModel], wanted: list[set[str]] | None, way: holdout.Way) -> dict[str, list[Outcome]]:
    if wanted is None:
        return holdout.leave_one_out(obs, models, way)
    known = {o.link for o in obs}
    for fold in wanted:
        if not fold <= known:
            raise BenchError(
                f"--holdout {','.join(sorted(fold - known))}: no network trial on that link (have {', '.join(sorted(known))})"
            )
    return {",".join(sorted(f)): holdout.fold(obs, models, f, way) for f in wanted}


def _terms(obs: list[Observed], models: dict[str, LinkModel]) -> list[str]:
    """Per trial, the step's measured time and its predicted communication split into latency (L alpha) and bandwidth (W / beta)."""
    out = ["", "terms per trial (ms): measured step | predicted latency sum L*alpha | predicted bandwidth sum W/beta | their share of the step"]
    for o in sorted((o for o in obs if o.link in models), key=lambda o: (o.case, o.strategy, -(o.rate_bps or 1e30))):
        link = models[o.link]
        lat = sum(c.per_step * link.of(c.op, c.msg_bytes, c.dtype).seconds(c.op, 0, o.n, "gloo") for c in o.calls)
        bw = comm_seconds(o.calls, o.n, link) - lat
        out.append(f"  {o.case:<32} {o.strategy:<16} {o.link:<8} {_ms(o.measured_s):>8} | {_ms(lat):>6} | {_ms(bw):>7} | "
                   f"{lat / o.measured_s:>5.1%} {bw / o.measured_s:>6.1%}")  # fmt: skip
    return out


@dataclass(frozen=True, slots=True)
class BreakEvenRow:
    """One strategy against the baseline of its case: measured and predicted break-even (bit/s), the prediction's interval."""

    case: str
    strategy: str
    measured_bps: float | None
    measured_reason: str | None
    predicted_bps: float | None
    predicted_reason: str | None
    low_bps: float | None  # the interval's ends; high None: one end has no crossing (unbounded)
    high_bps: float | None
    rounds: breakeven.RoundBreakEven | None = None  # measured over rounds, where the trials ran in rounds

    @property
    def reference_bps(self) -> float | None:
        """The measured break-even the prediction is checked against: over rounds where the trials ran
        in rounds (only when resolved there), else the crossing of the two measured curves."""
        if self.rounds is not None:
            return self.rounds.estimate.value if self.rounds.resolved and self.rounds.estimate else None
        return self.measured_bps

    @property
    def within(self) -> bool | None:
        ref = self.reference_bps
        if self.predicted_bps is None or ref is None:
            return None
        return breakeven.within_factor(self.predicted_bps, ref)


@dataclass(frozen=True, slots=True)
class Validation:
    """Everything `predict` shows: the links' fits, the observed steps, each fold's outcomes, the break-evens."""

    links: dict[str, LinkModel]
    observed: list[Observed]
    folds: dict[str, list[Outcome]]
    breakevens: list[BreakEvenRow]
    noise: dict[str, rows.RunNoise]  # run id -> the machine's noise over that sweep
    way: holdout.Way = holdout.Way()  # how each strategy's compute and overlap were taken

    @property
    def outcomes(self) -> list[Outcome]:
        return [o for f in self.folds.values() for o in f]

    @property
    def codecs(self) -> list[holdout.CodecCost]:
        return holdout.codec_costs(self.observed, self.links, BASELINE, self.way.overlap == "profiled")

    def noisy(self, o: Outcome) -> bool:
        """Whether a run of `o`'s trial was flagged NOISY (its error then measures the machine as much as the model)."""
        return any(self.noise[r].noisy for r in o.trial.runs if r in self.noise)

    def error_summary(self) -> str:
        """MAPE and worst trial over every held-out trial, and apart over quiet and NOISY sweeps where any was NOISY."""
        every = self.outcomes
        noisy = [o for o in every if self.noisy(o)]
        if not noisy:
            return _errors(every)
        quiet = [o for o in every if not self.noisy(o)]
        split = f"quiet sweeps only: {_errors(quiet)}" if quiet else "none from a quiet sweep"
        return f"{_errors(every)}; {len(noisy)} of them from sweeps flagged NOISY ({split})"


def _errors(outcomes: list[Outcome]) -> str:
    """`MAPE 4.0% over 36 held-out trials; worst +23.0% (baseline on veth); a true model on these launches (noise floor): ...`."""
    worst = max(outcomes, key=lambda o: abs(o.error)) if outcomes else None
    floor = holdout.noise_floor(outcomes)
    return (f"MAPE {holdout.mape(outcomes):.1%} over {len(outcomes)} held-out trials"
            + (f"; worst {worst.error:+.1%} ({worst.trial.strategy} on {worst.trial.link})" if worst else "")
            + (f"; a true model on these launches (noise floor): MAPE ~{floor.mape:.1%}, worst ~{floor.worst:.1%} (launch cv "
               f"{floor.cv:.1%} pooled, median of {floor.launches} launches, compute from {floor.calibration_links} links)"
               if floor else ""))  # fmt: skip


def model_curve(c: holdout.Compute, o: Observed, calibrated: dict[str, LinkModel], rates: dict[str, float]) -> Callable[[float], float]:
    """Predicted step (s) of `o`'s calls against link rate (bit/s) at compute `c` (its seconds, codec and hidden
    communication): the calibrated links either side, scaled (`links.bracketing`)."""
    def step(r: float) -> float:
        comm = sum(w * comm_seconds(o.calls, o.n, link) for link, w in links.bracketing(r, calibrated, rates))
        return c.seconds + c.codec_s + exposed(comm, c.hidden_s)

    return step


def _breakevens(obs: list[Observed], models: dict[str, LinkModel], rates: dict[str, float], way: holdout.Way) -> list[BreakEvenRow]:
    """Measured and predicted break-even per strategy (compute from every link, taken `way`; links scaled by rate)."""
    calibrated = {name: m for name, m in models.items() if name in rates}
    if not calibrated:
        return []
    out = []
    for case in sorted({o.case for o in obs}):
        every = [o for o in obs if o.case == case]
        base = [o for o in every if o.strategy == BASELINE and o.link in models]
        cb = holdout.strategy_compute(obs, models, case, BASELINE, way=way, baseline=BASELINE)
        if cb is None:
            continue
        for strat in sorted({o.strategy for o in every if o.link in models} - {BASELINE}):
            cand = [o for o in every if o.strategy == strat and o.link in models]
            measured, why = breakeven.crossing([(o.rate_bps, o.measured_s) for o in every if o.strategy == BASELINE and o.rate_bps],
                                               [(o.rate_bps, o.measured_s) for o in every if o.strategy == strat and o.rate_bps])  # fmt: skip
            cc = holdout.strategy_compute(obs, models, case, strat, way=way, baseline=BASELINE)
            rounds = breakeven.over_rounds(_round_points([o for o in every if o.strategy == BASELINE]), _round_points(cand))
            if cc is None:
                out.append(BreakEvenRow(case, strat, measured, why, None, f"no {way.compute} compute", None, None, rounds))
                continue
            base_curve = model_curve(cb, base[0], calibrated, rates)
            preds = [breakeven.predicted_crossing(base_curve, model_curve(_shifted(cb, d, cc.hidden_s), cand[0], calibrated, rates))
                     for d in holdout.difference(cb, cc)]  # fmt: skip
            (p, pwhy), (a, _), (b, _) = preds
            lo, hi = (min(a, b), max(a, b)) if a and b else (a or b, None) if a or b else (None, None)
            out.append(BreakEvenRow(case, strat, measured, why, p, pwhy, lo, hi, rounds))
    return out


def _shifted(base: holdout.Compute, d: float, hidden_s: float) -> holdout.Compute:
    """The baseline's compute plus `d` (a strategy's step less the baseline's outside communication), hiding `hidden_s`."""
    return holdout.Compute(base.seconds + base.codec_s + d, base.low_s, base.high_s, base.links, None, hidden_s)


def _round_points(obs: list[Observed]) -> dict[tuple[str, int], dict[float, float]]:
    """(run, round) -> {link rate: that round's step p50}, over the shaped links of `obs`."""
    out: dict[tuple[str, int], dict[float, float]] = {}
    for o in obs:
        for run, rnd, p50 in o.by_round if o.rate_bps else ():
            out.setdefault((run, rnd), {})[o.rate_bps] = p50  # type: ignore[index]
    return out


def validate(paths: list[Path], wanted: list[set[str]] | None, way: holdout.Way = holdout.Way()) -> Validation:
    """Calibrate on the collectives rows, hold out links of the train rows, predict them; BenchError without both."""
    trial_rows, comm = rows.load(paths)
    return validate_rows(trial_rows, comm, wanted, way)


def validate_rows(trial_rows: pd.DataFrame, comm: pd.DataFrame, wanted: list[set[str]] | None,
                  way: holdout.Way = holdout.Way()) -> Validation:  # fmt: skip
    models = rows.link_models(trial_rows)
    obs = rows.observed(trial_rows, comm)
    if not models or not obs:
        raise BenchError("predict needs collectives rows (suite calibration) and train rows (suite network) on the same links")
    folds = _folds(obs, models, wanted, way)
    breakevens = _breakevens(obs, models, rows.rates(trial_rows), way)
    return Validation(models, obs, folds, breakevens, rows.run_noise(trial_rows), way)


def _rate(bps: float | None, reason: str | None = None) -> str:
    return breakeven.rate_text(bps) if bps else f"- ({reason})" if reason else "-"


WAY_TEXT = {
    "fitted": "each strategy's compute fitted on its own trials (codec and hook work included)",
    "replayed": "the baseline's compute plus each hook's codec replayed apart from the link (codec_s_per_step)",
    "profiled": "less the communication its profiled calibration trials hid behind compute (comm_hidden_s_per_step)",
    "none": "every collective exposed",
}


def predict_text(paths: list[Path], wanted: list[set[str]] | None, way: holdout.Way = holdout.Way()) -> str:
    """The `commbench predict` report: per held-out trial measured, predicted, error; MAPE per fold and overall."""
    v = validate(paths, wanted, way)
    lines = ["calibration (alpha-beta per collective kind, gloo ring, fitted on the collectives rows of each link):"]
    for name, link in sorted(v.links.items()):
        fits = ", ".join(f"{op} a={ab.alpha_s * 1e6:.0f}us b={ab.beta_Bps * 8 / 1e6:.0f}Mbit/s (max err {ab.max_rel_error:.1%})"
                         for op, ab in link.by_op.items())  # fmt: skip
        lines.append(f"  {name:<8} {fits}")
    lines += ["", "sweeps (the machine's noise, measured between launches: bench/runner/noise.py):"]
    lines += [f"  {n.suite:<12} {run:<24} {n.line}" for run, n in sorted(v.noise.items())]
    for fold, outcomes in v.folds.items():
        lines += ["", f"held out: {fold} (compute from the other links, {WAY_TEXT[v.way.compute]}; {WAY_TEXT[v.way.overlap]}; "
                  "all values predicted except 'measured')",
                  f"  {'case':<40} {'strategy':<18} {'link':<8} {'measured ms':>11} {'predicted ms':>12} {'compute':>8} {'codec':>6} "
                  f"{'comm':>8} {'hidden':>7} {'error':>7}"]  # fmt: skip
        for o in outcomes:
            p = o.predicted
            lines.append(f"  {o.trial.case:<40} {o.trial.strategy:<18} {o.trial.link:<8} {_ms(o.trial.measured_s):>11} "
                         f"{_ms(p.total_s):>12} {_ms(p.compute_s):>8} {_ms(p.codec_s):>6} {_ms(p.comm_s):>8} {_ms(p.overlap_s):>7} "
                         f"{o.error:>+7.1%}")  # fmt: skip
        lines.append(f"  MAPE {holdout.mape(outcomes):.1%} over {len(outcomes)} trials")
    lines += ["", f"summary: {v.error_summary()}"]
    lines += _terms(v.observed, v.links)
    lines += ["", "break-even bandwidth vs baseline (measured: log-interpolated crossing of the medians, and over rounds where "
              "the trials ran in rounds, which the 1.5x check uses, only where resolved; predicted [low, high] from the compute range):"]  # fmt: skip
    for b in v.breakevens:
        verdict = {None: "", True: "  within 1.5x", False: "  OFF by more than 1.5x"}[b.within]
        rounds = f"; over rounds {breakeven.round_text(b.rounds)}" if b.rounds is not None else ""
        lines.append(f"  {b.case:<28} {b.strategy:<16} measured {_rate(b.measured_bps, b.measured_reason)}{rounds}; predicted "
                     f"{_rate(b.predicted_bps, b.predicted_reason)} [{_rate(b.low_bps)}, {_rate(b.high_bps)}]{verdict}")  # fmt: skip
    lines += ["", "codec and hook work per step, two ways: each strategy's compute less the baseline's, both fitted on every link "
              "[the range of their residuals], per gradient element (the baseline's all-reduced fp32 bytes / 4); and the codec "
              "replayed apart from the link (codec_s_per_step: median [lowest, highest] over its links):"]  # fmt: skip
    lines += [f"  {c.case:<28} {c.strategy:<16} fitted {c.seconds * 1e3:+7.1f} ms [{c.low_s * 1e3:+.1f}, {c.high_s * 1e3:+.1f}] = "
              f"{c.per_element_s * 1e9:+.1f} ns per element ({c.elements / 1e6:.3g} M elements); {_replayed(c)}" for c in v.codecs]  # fmt: skip
    return "\n".join(lines)


def _replayed(c: holdout.CodecCost) -> str:
    r = c.replayed
    if r is None:
        return "replayed: not measured (rows without codec_s_per_step)"
    return (f"replayed {r.seconds * 1e3:+.1f} ms [{r.low_s * 1e3:+.1f}, {r.high_s * 1e3:+.1f}] = "
            f"{r.seconds / c.elements * 1e9:+.1f} ns per element")


# --- advise ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Advised:
    """An answer of `advise`: the ranked advice, the measured accuracy cost per strategy, and where each number came from."""

    request: AdviseRequest
    shape: ModelShape
    cluster: adv.Cluster
    advice: list[adv.Advice]
    accuracy: dict[str, str]  # measured strategy (with its options) -> its accuracy cost
    notes: list[str]

    def accuracy_of(self, a: adv.Advice) -> str:
        """The measured accuracy cost of exactly this technique; else of the same strategy with other
        options, naming them; else "not measured"."""
        name = a.technique.name
        if name in self.accuracy:
            return self.accuracy[name]
        kin = sorted(s for s in self.accuracy if _registered(s) == _registered(name))
        return "; ".join(f"as {s}: {self.accuracy[s]}" for s in kin) or "not measured"

    @property
    def heading(self) -> str:
        c = self.cluster
        return (f"{self.request.model} ({self.shape.params / 1e9:.3g} B params; {self.shape.source}) on {c.nodes} nodes x "
                f"{c.gpus_per_node} GPUs, link {breakeven.rate_text(c.link.rate_bps)}, {c.link.latency_s * 1e6:.3g} us; intra "
                f"{breakeven.rate_text(c.intra.rate_bps)}; {c.mem_bytes / 1e9:.3g} GB per device")  # fmt: skip


def advised(request: AdviseRequest, paths: list[Path]) -> Advised:
    """Rank the techniques for `request`; BenchError when nothing fits (or the request is bad)."""
    shape, c = request.resolve()
    advice = adv.advise(shape, c)
    if not any(a.fits for a in advice):
        smallest = min(a.state_bytes for a in advice)
        raise BenchError(f"no layout fits {request.model} in {c.mem_bytes / 1e9:.3g} GB per device (smallest model state: "
                         f"{smallest / 1e9:.3g} GB per GPU)")  # fmt: skip
    notes = [
        "every time is predicted (alpha-beta, no overlap: comm is an upper bound on exposed time); model state is exact "
        "for DDP and FSDP, the formula for TP and PP; activations are not counted",
        f"link figures: {c.link.source}; intra-node: {c.intra.source}",
        f"compute: 6 x params x {c.tokens_per_gpu} tokens / {c.flops / 1e12:.0f} TFLOP/s per GPU (assumed, --tflops)",
        _validated(paths),
    ]
    return Advised(request, shape, c, advice, _accuracy(paths), notes)


def advice_text(a: Advised) -> str:
    """The ranked table as the terminal shows it, with its notes."""
    lines = [a.heading, f"{'#':>2} {'technique':<34} {'layout':<30} {'state GB/GPU':>12} {'fits':>4} {'compute ms':>10} "
             f"{'comm ms':>9} {'step ms':>9}  accuracy cost"]  # fmt: skip
    for i, x in enumerate(a.advice, 1):
        lines.append(f"{i:>2} {x.technique.name:<34} {x.technique.layout.name:<30} {x.state_bytes / 1e9:>12.2f} "
                     f"{'yes' if x.fits else 'NO':>4} {_ms(x.compute_s):>10} {_ms(x.comm_s):>9} {_ms(x.step_s):>9}  "
                     f"{a.accuracy_of(x)}")  # fmt: skip
    return "\n".join(lines + ["", *("note: " + n for n in a.notes)])


def _accuracy(paths: list[Path]) -> dict[str, str]:
    """Strategy -> measured eval-loss change against the baseline (median over cases), from `paths`' train rows."""
    if not paths:
        return {}
    df = rows.load(paths)[0]
    ok = df[(df["status"] == "ok") & (df["workload"] == "train") & df["eval_loss"].notna()]
    base = ok[ok["strategy"] == BASELINE]["eval_loss"].median()
    return {str(s): f"{g['eval_loss'].median() - base:+.3f} nats eval loss (measured on {', '.join(sorted(set(g['model'])))}, "
                    f"{len(g)} rows)" for s, g in ok.groupby("strategy")}  # fmt: skip


def _validated(paths: list[Path]) -> str:
    """The held-out error of the model on `paths`' calibration and network rows, or where to get it."""
    try:
        v = validate(paths, None) if paths else None
    except BenchError:
        v = None
    if v is None or not v.outcomes:
        return "validated error: none here (give --results with the calibration and network suites' rows; docs/predict.md)"
    return (f"validated error of the step model on emulated links (leave one link out, links {', '.join(sorted(v.links))}): "
            f"{v.error_summary()}; not validated beyond the emulated links and 4 nodes")


def _registered(name: str) -> str:
    """The registered strategy of a name with options: `topk(ratio=0.01)` -> `topk`."""
    return name.split("(")[0]

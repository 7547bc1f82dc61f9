"""The predictor (bench/predict): textbook alpha-beta costs, calibration, step and memory models, hold-out, advice."""

from __future__ import annotations

import dataclasses
import math
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bench.network.spec import tbf_burst_bytes
from bench.predict import advise as adv
from bench.predict import breakeven, holdout, links
from bench.predict.calibrate import AlphaBeta, Sample, fit, fit_by_op, kind, segments, segments_by_op
from bench.predict.collectives import seconds, terms
from bench.predict.memory import Layout, model_state_bytes
from bench.predict.shapes import PUBLISHED, ZOO, parameter_shapes
from bench.predict.step import Call, LinkModel, comm_seconds, exposed, predict

REPO = Path(__file__).resolve().parents[2]
A, B = 20e-6, 1e9  # alpha 20 us, beta 1 GB/s


# (op, algorithm, n, S, textbook time): Thakur, Rabenseifner & Gropp 2005; gloo as bench/comm/cost_model.GLOO_NOTES.
TEXTBOOK = [
    ("all_reduce", "ring", 8, 1e6, 2 * 7 * A + 2 * 7 / 8 * 1e6 / B),
    ("all_gather", "ring", 8, 1e6, 7 * A + 7 / 8 * 1e6 / B),
    ("reduce_scatter", "ring", 8, 1e6, 7 * A + 7 / 8 * 1e6 / B),
    ("all_to_all", "ring", 8, 1e6, 7 * A + 7 / 8 * 1e6 / B),
    ("broadcast", "ring", 8, 1e6, 7 * A + 1e6 / B),
    ("all_reduce", "tree", 8, 1e6, 2 * 3 * A + 2 * 7 / 8 * 1e6 / B),
    ("all_gather", "tree", 8, 1e6, 3 * A + 7 / 8 * 1e6 / B),
    ("broadcast", "tree", 8, 1e6, 3 * (A + 1e6 / B)),
    ("all_to_all", "tree", 8, 1e6, 3 * A + 3 / 2 * 1e6 / B),
    ("send", "ring", 8, 1e6, A + 1e6 / B),
    ("reduce_scatter", "gloo", 4, 1e6, 2 * 3 * A + 2 * 3 / 4 * 1e6 / B),
    ("broadcast", "gloo", 4, 1e6, 3 * (A + 1e6 / B)),
    ("all_reduce", "ring", 1, 1e6, 0.0),
]


@pytest.mark.parametrize(("op", "algorithm", "n", "size", "expected"), TEXTBOOK)
def test_each_collective_costs_its_textbook_formula(op: str, algorithm: str, n: int, size: float, expected: float) -> None:
    assert seconds(op, size, n, A, B, algorithm) == pytest.approx(expected, rel=1e-12)  # type: ignore[arg-type]


def test_an_unknown_collective_or_algorithm_is_refused() -> None:
    with pytest.raises(ValueError, match="no alpha-beta model"):
        terms("gossip", 1, 2)
    with pytest.raises(ValueError, match="unknown algorithm"):
        terms("all_reduce", 1, 2, "hypercube")  # type: ignore[arg-type]


def _synthetic(alpha: float, beta: float, noise: float = 0.0) -> list[Sample]:
    out = []
    for i, (op, size) in enumerate((op, s) for op in ("all_reduce", "all_gather") for s in (16e3, 256e3, 2e6, 8e6)):
        jitter = 1 + noise * (1 if i % 2 else -1)
        out.append(Sample(op, 2, size, seconds(op, size, 2, alpha, beta, "gloo") * jitter))
    return out


def test_a_synthetic_calibration_recovers_alpha_and_beta() -> None:
    got = fit(_synthetic(150e-6, 12.5e6))
    assert got.alpha_s == pytest.approx(150e-6, rel=1e-9) and got.beta_Bps == pytest.approx(12.5e6, rel=1e-9)
    assert got.max_rel_error < 1e-9
    noisy = fit(_synthetic(150e-6, 12.5e6, noise=0.01))
    assert noisy.alpha_s == pytest.approx(150e-6, rel=0.2) and noisy.beta_Bps == pytest.approx(12.5e6, rel=0.02)  # alpha is ~1% of the big calls
    assert set(fit_by_op(_synthetic(1e-4, 1e8))) == {"all_reduce", "all_gather"}


def test_a_type_timed_apart_is_its_own_kind_and_an_untimed_one_takes_fp32s_fit() -> None:
    """gloo sums fp16 at its own speed: fp16 all-reduces calibrated apart price fp16 calls; others fall back to fp32's fit."""
    fp16 = [Sample("all_reduce", 2, s, seconds("all_reduce", s, 2, 200e-6, 4e6, "gloo"), "float16") for s in (16e3, 256e3, 2e6, 8e6)]
    samples = [*_synthetic(150e-6, 12.5e6), *fp16]
    by_kind = fit_by_op(samples)
    assert set(by_kind) == {"all_reduce", "all_gather", "all_reduce:float16"} and kind("all_reduce", "float32") == "all_reduce"
    assert by_kind["all_reduce:float16"].beta_Bps == pytest.approx(4e6) and by_kind["all_reduce"].beta_Bps == pytest.approx(12.5e6)
    link = LinkModel("l", by_kind["all_reduce"], by_kind, segments=segments_by_op(samples))
    assert link.of("all_reduce", 1e6, "float16").beta_Bps == pytest.approx(4e6)  # its segment, in its kind
    assert link.of("all_reduce", 1e6).beta_Bps == pytest.approx(12.5e6) and link.of("all_gather", 1e6, "bfloat16").beta_Bps == pytest.approx(12.5e6)
    call = Call("all_reduce", 2e6, 1.0, "float16")
    assert comm_seconds([call], 2, link) == pytest.approx(seconds("all_reduce", 2e6, 2, 200e-6, 4e6, "gloo"))


def test_calibration_needs_two_sizes_and_keeps_alpha_non_negative() -> None:
    with pytest.raises(ValueError, match="two or more message sizes"):
        fit([Sample("all_reduce", 2, 1e6, 0.01), Sample("all_reduce", 2, 1e6, 0.011)])
    negative = [Sample("all_reduce", 2, s, s / 1e8 - 5e-5) for s in (1e4, 1e6, 1e7)]  # the line crosses below 0: alpha < 0
    got = fit(negative)
    assert got.alpha_s == 0.0 and got.beta_Bps > 0


def test_the_step_is_compute_plus_calls_plus_codec_minus_overlap_capped_at_comm() -> None:
    link = LinkModel("l", AlphaBeta(A, B, 0, 0.0))
    calls = (Call("all_reduce", 4e6, 2.0), Call("all_gather", 1e6, 1.0))
    comm = 2 * seconds("all_reduce", 4e6, 4, A, B, "gloo") + seconds("all_gather", 1e6, 4, A, B, "gloo")
    got = predict(compute_s=0.1, calls=calls, n=4, link=link, codec_s=0.01, overlap_s=0.002)
    assert got.comm_s == pytest.approx(comm) and got.total_s == pytest.approx(0.1 + comm + 0.01 - 0.002)
    assert predict(compute_s=0.1, calls=calls, n=4, link=link, overlap_s=10.0).total_s == pytest.approx(0.1)


def test_every_zoo_shape_is_the_built_models_parameters() -> None:
    torch = pytest.importorskip("torch")
    from bench.models.zoo import _CLASSES, MODELS

    for name, shape in ZOO.items():
        spec = MODELS.get(name)
        with torch.device("meta"):
            model = _CLASSES[(spec.family, spec.objective)](spec.config)
        assert [tuple(p.shape) for p in model.parameters()] == parameter_shapes(shape), name


def test_published_llama_7b_has_its_published_parameter_count() -> None:
    assert PUBLISHED["llama-7b"].params == 6_738_415_616  # Llama-2-7b: 6.74 B


def test_model_state_follows_zero_arithmetic() -> None:
    """The formulas tests/integration/test_partition.py checks against measured rows: DDP 16 Psi + 4 P, ZeRO-3 16 Psi'/N + 4 P."""
    from bench.comm.cost_model import fsdp_padded_numel

    m = ZOO["gpt2-tiny"]
    shapes = parameter_shapes(m)
    psi, p = m.params, len(shapes)
    assert model_state_bytes(m, Layout(name="ddp"), 4) == 16 * psi + 4 * p
    padded = sum(fsdp_padded_numel(s, 3) for s in shapes)
    assert model_state_bytes(m, Layout(name="z3", zero=3), 3) == 16 * padded // 3 + 4 * p
    z1, z2 = (model_state_bytes(m, Layout(name="z", zero=z), 4) for z in (1, 2))
    assert 16 * psi + 4 * p > z1 > z2 > model_state_bytes(m, Layout(name="z3", zero=3), 4)
    assert model_state_bytes(m, Layout(name="tp", tp=2), 2) < 16 * psi + 4 * p
    # The textbook rows of bench/predict/memory.py, exactly: ZeRO-1 8 Psi + 8 Psi/N, ZeRO-2 4 Psi + 12 Psi/N.
    assert z1 == 8 * psi + math.ceil(8 * psi / 4) + 4 * p and z2 == 4 * psi + math.ceil(12 * psi / 4) + 4 * p
    # TP x ZeRO-3 on 8 ranks (tp 2, so 4-way sharding): 16 Psi_tp / 4, Psi_tp the rank's share after TP.
    tp = model_state_bytes(m, Layout(name="tp", tp=2), 2) - 4 * p  # 16 Psi_tp
    assert model_state_bytes(m, Layout(name="tpz3", zero=3, tp=2), 8) == math.ceil(tp / 4) + 4 * p


def test_mape_is_the_median_of_the_absolute_errors() -> None:
    link = LinkModel("l", AlphaBeta(0.0, 1e9, 0, 0.0))
    obs = [holdout.Observed("c", "s", "l", None, 2, m, ()) for m in (1.0, 2.0, 4.0)]
    outcomes = [holdout.Outcome(o, predict(compute_s=1.0, calls=(), n=2, link=link), ()) for o in obs]
    assert sorted(abs(o.error) for o in outcomes) == [0.0, 0.5, 0.75] and holdout.mape(outcomes) == 0.5  # the mean is 0.417


def _observed(
    compute: dict[str, float], link_models: dict[str, LinkModel], calls: dict[str, tuple[Call, ...]]
) -> list[holdout.Observed]:
    return [holdout.Observed("case", s, name, None, 2, compute[s] + comm_seconds(calls[s], 2, link), calls[s])
            for s in compute for name, link in link_models.items()]  # fmt: skip


def test_a_fold_predicts_held_out_links_exactly_when_the_model_is_true() -> None:
    models = {n: LinkModel(n, AlphaBeta(1e-4, r / 8, 0, 0.0)) for n, r in (("fast", 1e9), ("mid", 2e8), ("slow", 5e7))}
    calls = {"baseline": (Call("all_reduce", 6e6, 1.0),), "fp16": (Call("all_reduce", 3e6, 1.0),)}
    obs = _observed({"baseline": 0.1, "fp16": 0.12}, models, calls)
    outcomes = holdout.fold(obs, models, {"mid"})
    assert {(o.trial.strategy, o.trial.link) for o in outcomes} == {("baseline", "mid"), ("fp16", "mid")}
    assert all(abs(o.error) < 1e-12 for o in outcomes) and holdout.mape(outcomes) < 1e-12
    assert set(holdout.leave_one_out(obs, models)) == {"fast", "mid", "slow"}
    broken = [
        holdout.Observed(o.case, o.strategy, o.link, o.rate_bps, o.n, o.measured_s * (1.2 if o.link == "mid" else 1), o.calls)
        for o in obs
    ]
    assert all(o.error == pytest.approx(1 / 1.2 - 1) for o in holdout.fold(broken, models, {"mid"}))


def test_the_replayed_way_is_the_baselines_compute_plus_the_replayed_codec() -> None:
    """Nothing fitted per strategy: a strategy's step is fp32's compute + its replayed codec + its own communication."""
    models = {n: LinkModel(n, AlphaBeta(1e-4, r / 8, 0, 0.0)) for n, r in (("fast", 1e9), ("mid", 2e8), ("slow", 5e7))}
    calls = {"baseline": (Call("all_reduce", 6e6, 1.0),), "topk": (Call("all_gather", 1e5, 1.0),), "old": (Call("all_reduce", 3e6, 1.0),)}
    obs = _observed({"baseline": 0.1, "topk": 0.14, "old": 0.11}, models, calls)  # topk's codec: 40 ms
    codec = {"fast": 0.038, "mid": 0.040, "slow": 0.043}
    obs = [dataclasses.replace(o, codec_s=codec[o.link]) if o.strategy == "topk" else o for o in obs]
    c = holdout.strategy_compute(obs, models, "case", "topk", exclude={"mid"}, way=holdout.Way("replayed"))
    base = holdout.strategy_compute(obs, models, "case", "baseline", exclude={"mid"}, way=holdout.Way("replayed"))
    assert c is not None and base is not None and c.seconds == pytest.approx(0.1) and base.codec is None
    assert c.codec == holdout.Codec(statistics.median([0.038, 0.043]), 0.038, 0.043)  # from the calibration links only
    assert holdout.difference(base, c) == pytest.approx((0.0405, 0.038, 0.043))
    outcomes = {o.trial.strategy: o for o in holdout.fold(obs, models, {"mid"}, holdout.Way("replayed"))}
    assert set(outcomes) == {"baseline", "topk"}  # "old" has no replayed codec: not predicted, not guessed
    assert outcomes["topk"].predicted.codec_s == pytest.approx(0.0405) and outcomes["topk"].error == pytest.approx(0.0005 / outcomes["topk"].trial.measured_s)
    fitted = {o.trial.strategy: o for o in holdout.fold(obs, models, {"mid"})}
    assert set(fitted) == {"baseline", "topk", "old"} and fitted["topk"].predicted.codec_s == 0.0
    with pytest.raises(ValueError, match="unknown compute way"):
        holdout.Way("guessed")


def test_compute_weighs_each_residual_by_its_variance() -> None:
    """var(r) = (COMM_REL_ERROR comm)^2 + (cv step)^2: a communication-bound link's residual weighs little."""
    models = {"fast": LinkModel("fast", AlphaBeta(0.0, 1e9, 0, 0.0)), "slow": LinkModel("slow", AlphaBeta(0.0, 1e7, 0, 0.0))}
    calls = (Call("all_reduce", 1e7, 1.0),)  # n = 2: 10 ms on fast, 1 s on slow
    runs = lambda step, cv: tuple(("r", i, step * (1 + d * cv)) for i, d in enumerate((-1, 0, 1)))  # noqa: E731 (stdev/mean = cv)
    fast = holdout.Observed("c", "s", "fast", None, 2, 0.25 + 0.01, calls, runs(0.26, 0.04))
    slow = holdout.Observed("c", "s", "slow", None, 2, 0.25 + 1.0 * 1.07, calls, runs(1.32, 0.04))  # comm 7% slower than modelled
    assert holdout.launch_cv(fast) == pytest.approx(0.04) and holdout.launch_cv(dataclasses.replace(fast, by_round=())) == holdout.DEFAULT_CV
    w_fast, w_slow = (holdout.residual_weight(o, c, 0.04) for o, c in ((fast, 0.01), (slow, 1.0)))
    assert w_fast == pytest.approx(1 / ((0.1 * 0.01) ** 2 + (0.04 * 0.26) ** 2))
    assert w_slow == pytest.approx(1 / ((0.1 * 1.0) ** 2 + (0.04 * 1.32) ** 2))
    c = holdout.compute_of([fast, slow], models)
    expected = (0.25 * w_fast + 0.32 * w_slow) / (w_fast + w_slow)  # residuals 0.25 and 0.32
    assert c.seconds == pytest.approx(expected) and abs(c.seconds - 0.25) < 0.002  # the median of two would be 0.285
    assert (c.low_s, c.high_s) == pytest.approx((0.25, 0.32)) and c.links == ("fast", "slow")


def test_size_segments_recover_each_regime_and_interpolate_between_sizes() -> None:
    """Small calls at (50 us, 1 GB/s), large ones at (2 ms, 0.25 GB/s): one line fits neither; segments fit both."""
    small = [Sample("all_gather", 2, s, seconds("all_gather", s, 2, 50e-6, 1e9, "gloo")) for s in (16384.0, 262144.0)]
    large = [Sample("all_gather", 2, s, seconds("all_gather", s, 2, 2e-3, 0.25e9, "gloo")) for s in (2097152.0, 8388608.0)]
    segs = segments(small + large)
    assert [(g.low_bytes, g.high_bytes) for g in segs] == [(16384, 262144), (262144, 2097152), (2097152, 8388608)]
    assert segs[0].fit.alpha_s == pytest.approx(50e-6) and segs[0].fit.beta_Bps == pytest.approx(1e9)
    assert segs[2].fit.alpha_s == pytest.approx(2e-3) and segs[2].fit.beta_Bps == pytest.approx(0.25e9)
    link = LinkModel("l", fit(small + large), {"all_gather": fit(small + large)}, segments={"all_gather": segs})
    assert segs[1].fit == fit(small[1:] + large[:1])  # the junction: its own two sizes (a negative alpha refitted as 0)
    for s in small + large[1:]:  # calls inside one regime are priced exactly; the single line is off by > 20% somewhere
        assert comm_seconds([Call("all_gather", s.msg_bytes)], 2, link) == pytest.approx(s.seconds)
    assert max(abs(link.default.seconds("all_gather", s.msg_bytes, 2, "gloo") / s.seconds - 1) for s in small + large) > 0.2
    mid = (2097152 + 8388608) / 2  # time is linear in S within a segment
    assert comm_seconds([Call("all_gather", mid)], 2, link) == pytest.approx((large[0].seconds + large[1].seconds) / 2)
    beyond = seconds("all_gather", 64e6, 2, 2e-3, 0.25e9, "gloo")  # beyond the calibrated sizes: the last segment
    assert comm_seconds([Call("all_gather", 64e6)], 2, link) == pytest.approx(beyond)


def test_a_full_token_bucket_lets_the_steps_first_bytes_through() -> None:
    """comm = sum of alphas + (W - min(B, W)) / beta, with W the step's serial bytes and B the bucket."""
    ab = AlphaBeta(100e-6, 1e6, 2, 0.0)
    link = LinkModel("shaped", ab, {"all_reduce": ab}, burst_bytes=50e3)
    calls = [Call("all_reduce", 40e3, 2.0)]  # n = 2: W = 2 x 40 KB, latency 2 x 2 alpha
    assert comm_seconds(calls, 2, link) == pytest.approx(4 * 100e-6 + (80e3 - 50e3) / 1e6)
    assert comm_seconds([Call("all_reduce", 20e3)], 2, link) == pytest.approx(2 * 100e-6)  # W <= B: latency alone
    assert comm_seconds(calls, 2, link.scaled(1.0, "no bucket", 0.0)) == pytest.approx(4 * 100e-6 + 80e3 / 1e6)


def test_a_scaled_link_keeps_its_latencies_and_scales_every_bandwidth() -> None:
    ab = AlphaBeta(1e-3, 1e6, 2, 0.0)
    link = LinkModel("cal", ab, {"all_reduce": ab}, segments={"all_reduce": segments(
        [Sample("all_reduce", 2, s, 2 * 1e-3 + s / 1e6) for s in (1e4, 1e5, 1e6)])})  # fmt: skip
    fast = links.scaled_to(4e9, {"cal": link, "far": link}, {"cal": 1e9, "far": 1e6})  # nearest in log-rate: cal, x4
    assert fast.burst_bytes == tbf_burst_bytes(4e9) and fast.of("all_reduce", 5e5).alpha_s == pytest.approx(1e-3)
    assert fast.of("all_reduce", 5e5).beta_Bps == pytest.approx(4e6) and fast.default.beta_Bps == pytest.approx(4e6)
    with pytest.raises(ValueError):
        links.scaled_to(1e9, {"veth": link}, {})


def test_between_two_calibrated_links_the_curve_weighs_both_in_log_rate_and_does_not_jump() -> None:
    """Links at 200 and 50 Mbit/s running at 90% and 60% of their rates: at 100 Mbit/s the old nearest-link
    curve jumped by a third halfway (log) between them; the bracketing one moves smoothly from one to the other."""
    cal = {n: LinkModel(n, AlphaBeta(1e-4, eff * r / 8, 2, 0.0)) for n, r, eff in (("200mbit", 2e8, 0.9), ("50mbit", 5e7, 0.6))}
    rates = {"200mbit": 2e8, "50mbit": 5e7}
    calls = (Call("all_reduce", 6e6, 1.0),)

    def comm(r: float) -> float:
        return sum(w * comm_seconds(calls, 2, link) for link, w in links.bracketing(r, cal, rates))

    at = {r: comm(r) for r in (2e8, 5e7)}
    assert at[2e8] == pytest.approx(comm_seconds(calls, 2, links.scaled_to(2e8, cal, rates)))  # a calibrated rate is its link
    assert [w for _, w in links.bracketing(5e7, cal, rates)] == [1.0] and len(links.bracketing(1e9, cal, rates)) == 1
    mid = (2e8 * 5e7) ** 0.5
    below, above = comm(mid * 0.999), comm(mid * 1.001)
    assert abs(below / above - 1) < 0.01  # continuous: the nearest link's curve jumps ~50% here (0.9 / 0.6)
    nearest = [comm_seconds(calls, 2, links.scaled_to(r, cal, rates)) for r in (mid * 0.999, mid * 1.001)]
    assert nearest[0] / nearest[1] > 1.4
    (lo, w_lo), (hi, w_hi) = links.bracketing(mid, cal, rates)
    assert (w_lo, w_hi) == pytest.approx((0.5, 0.5)) and lo.name.startswith("50mbit") and hi.name.startswith("200mbit")


def test_the_predicted_break_even_is_the_closed_form_crossing() -> None:
    """t = c + 8 W / (eff r): crossing at 8 (W_b - W_s) / (eff (c_s - c_b)), on a calibrated link scaled to each rate."""
    calibrated = {"cal": LinkModel("cal", AlphaBeta(0.0, 0.9 * 1e9 / 8, 2, 0.0))}  # 90% of its 1 Gbit/s rate

    def curve(c: float, calls: tuple[Call, ...]):  # type: ignore[no-untyped-def]
        return lambda r: c + comm_seconds(calls, 2, links.scaled_to(r, calibrated, {"cal": 1e9}).scaled(1, "no bucket", 0))

    base, cand = (Call("all_reduce", 6e6, 1.0),), (Call("all_reduce", 1e6, 1.0),)

    got, why = breakeven.predicted_crossing(curve(0.1, base), curve(0.15, cand))
    expected = 8 * (6e6 - 1e6) / (0.9 * 0.05)  # ring at n = 2: W = S
    assert why is None and got == pytest.approx(expected, rel=0.01)
    assert breakeven.within_factor(got, expected * 1.4) and not breakeven.within_factor(got, expected * 1.6)
    assert breakeven.predicted_crossing(curve(0.1, base), curve(0.05, cand))[0] is None  # faster everywhere


def test_advise_rules_out_what_does_not_fit_and_ranks_the_rest_by_step() -> None:
    c = adv.Cluster(nodes=8, gpus_per_node=8, link=links.resolve("100gbit"), intra=links.resolve("nvlink4"), mem_bytes=80e9)
    advice = adv.advise(PUBLISHED["llama-7b"], c)
    fits = [a for a in advice if a.fits]
    assert {a.technique.layout.name for a in advice if not a.fits} == {"DDP"}  # 16 B x 6.7 B params > 80 GB
    assert [a.step_s for a in fits] == sorted(a.step_s for a in fits) and advice[: len(fits)] == fits
    fsdp = next(a for a in advice if a.technique.name == "fsdp")
    assert fsdp.state_bytes == model_state_bytes(PUBLISHED["llama-7b"], Layout(name="z3", zero=3), 64)
    ddp = next(a for a in advice if a.technique.name == "baseline")
    assert ddp.comm_s == pytest.approx(min(seconds("all_reduce", 4 * PUBLISHED["llama-7b"].params, 64, 5e-6, 100e9 / 8, alg)
                                           for alg in ("ring", "tree")))  # fmt: skip


def test_links_parse_published_names_and_rates_and_refuse_others() -> None:
    from bench.errors import BenchError

    assert links.resolve("ib-ndr").rate_bps == 400e9 and links.resolve("100gbit").rate_bps == 100e9
    with pytest.raises(BenchError):
        links.resolve("warp")
    with pytest.raises(BenchError):
        links.resolve("veth")


def test_the_predictor_imports_no_torch() -> None:
    modules = sorted(p.stem for p in (REPO / "bench" / "predict").glob("*.py") if p.stem != "__init__")
    code = "import sys\n" + "".join(f"import bench.predict.{m}\n" for m in modules) + "print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def _true_model_sweep(launch_error: Callable[[np.random.Generator], np.ndarray]) -> list[holdout.Outcome]:
    """80 cases x 5 links of a true model, three launches a trial each off by `launch_error` (relative), left one link out."""
    rng = np.random.default_rng(1)
    models = {n: LinkModel(n, AlphaBeta(1e-4, r / 8, 0, 0.0)) for n, r in (("a", 1e10), ("b", 5e9), ("c", 2e9), ("d", 1e9), ("e", 5e8))}
    calls = (Call("all_reduce", 1e6, 1.0),)
    obs = []
    for case in range(80):
        for name, link in models.items():
            launches = (0.3 + comm_seconds(calls, 2, link)) * (1 + launch_error(rng))
            obs.append(holdout.Observed(f"c{case}", "s", name, None, 2, float(np.median(launches)), calls,
                                        tuple(("r", i, float(p)) for i, p in enumerate(launches))))  # fmt: skip
    return [o for f in holdout.leave_one_out(obs, models).values() for o in f]


def test_the_noise_floor_is_the_error_a_true_model_shows_on_noisy_launches() -> None:
    """A true model, each launch off by 10% (normal), three launches a trial: the held-out MAPE is the floor's."""
    outcomes = _true_model_sweep(lambda rng: 0.1 * rng.standard_normal(3))
    floor = holdout.noise_floor(outcomes)
    assert floor is not None and (floor.launches, floor.calibration_links, floor.trials) == (3, 4, 400)
    assert floor.cv == pytest.approx(0.1, rel=0.1)
    # 0.674 x 0.1 x sqrt(0.449 x 1.25) = 5.1%, the normal approximation of the floor
    assert floor.mape == pytest.approx(0.051, rel=0.1) and holdout.mape(outcomes) == pytest.approx(floor.mape, rel=0.1)
    assert floor.worst == pytest.approx(max(abs(o.error) for o in outcomes), rel=0.3)
    assert holdout.noise_floor([dataclasses.replace(o, trial=dataclasses.replace(o.trial, by_round=())) for o in outcomes]) is None


def test_the_noise_floor_keeps_the_launches_heavy_tails() -> None:
    """Launches off by Student's t (3 degrees of freedom): rare far launches inflate the standard deviation, which
    the median of three mostly ignores. The floor, drawn from the launches themselves, tracks the true model's
    error; a normal error of the same spread would overstate it."""
    outcomes = _true_model_sweep(lambda rng: 0.05 * rng.standard_t(3, 3))
    floor = holdout.noise_floor(outcomes)
    assert floor is not None
    assert holdout.mape(outcomes) == pytest.approx(floor.mape, rel=0.2)
    normal = statistics.NormalDist().inv_cdf(0.75) * floor.cv * (0.449 * 1.25) ** 0.5
    assert floor.mape < 0.85 * normal


def test_the_residual_weights_pool_the_launch_spread_of_a_strategys_trials() -> None:
    """Three launches give a trial's own spread 2 degrees of freedom: a trial whose launches agreed by chance must not
    take the weight. Both residuals share one spread, the root mean square of their own."""
    models = {"a": LinkModel("a", AlphaBeta(0.0, 1e12, 0, 0.0)), "b": LinkModel("b", AlphaBeta(0.0, 1e12, 0, 0.0))}
    runs = lambda step, cv: tuple(("r", i, step * (1 + d * cv)) for i, d in enumerate((-1, 0, 1)))  # noqa: E731
    lucky = holdout.Observed("c", "s", "a", None, 2, 0.30, (), runs(0.30, 0.001))
    spread = holdout.Observed("c", "s", "b", None, 2, 0.36, (), runs(0.36, 0.10))
    assert holdout.pooled_cv([lucky, spread]) == pytest.approx(((0.001**2 + 0.10**2) / 2) ** 0.5)
    assert holdout.pooled_cv([dataclasses.replace(lucky, by_round=())]) == holdout.DEFAULT_CV
    c = holdout.compute_of([lucky, spread], models)  # weights 1 / (cv step)^2 with one cv: 1/0.30^2 and 1/0.36^2
    assert c.seconds == pytest.approx((0.30 / 0.30**2 + 0.36 / 0.36**2) / (1 / 0.30**2 + 1 / 0.36**2), rel=1e-6)  # 0.3246; per-trial cv: 0.30


def test_a_held_out_trial_is_predicted_with_its_strategys_calibration_overlap_never_its_own() -> None:
    """Each calibration trial's residual adds back what it hid; the held-out one gets the strategy's median hidden time."""
    models = {n: LinkModel(n, AlphaBeta(1e-4, r / 8, 0, 0.0)) for n, r in (("fast", 1e9), ("mid", 2e8), ("slow", 5e7))}
    calls = (Call("all_reduce", 6e6, 1.0),)
    obs = []
    for name, link in models.items():
        comm = comm_seconds(calls, 2, link)
        # 60 ms hidden, all of the fast link's 48 ms; the held-out trial's own figure is one the prediction must not read
        hidden = 0.5 if name == "mid" else 0.06
        obs.append(holdout.Observed("case", "baseline", name, None, 2, 0.1 + exposed(comm, 0.06), calls, hidden_s=hidden))
    (o,) = holdout.fold(obs, models, {"mid"})
    assert o.predicted.overlap_s == pytest.approx(0.06) and abs(o.error) < 1e-12
    c = holdout.strategy_compute(obs, models, "case", "baseline", exclude={"mid"})
    assert c is not None and c.seconds == pytest.approx(0.1) and c.hidden_s == pytest.approx(0.06)
    (blind,) = holdout.fold(obs, models, {"mid"}, holdout.Way(overlap="none"))
    assert blind.predicted.overlap_s == 0.0 and blind.error > 0.01
    with pytest.raises(ValueError, match="unknown overlap way"):
        holdout.Way(overlap="guessed")

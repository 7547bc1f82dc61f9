"""Launch-level statistics: CIs over launches, the verdict they allow, and the auto-repeat stopping rule."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.compare.stats import launch_verdict, median_ci, order_statistic_level, paired_ratios
from bench.contracts import TrialConfig
from bench.runner.repeats import Launch, Repeats, combine


def _launches(median: float, noise: float, n: int, seed: int) -> list[float]:
    """n launch p50s spread uniformly within ±noise of `median`."""
    rng = np.random.default_rng(seed)
    return list(median * (1 + rng.uniform(-noise, noise, n)))


def test_order_statistic_levels() -> None:
    assert order_statistic_level(3, 1) == pytest.approx(0.75)
    assert order_statistic_level(5, 1) == pytest.approx(0.9375)
    assert order_statistic_level(6, 1) == pytest.approx(1 - 2 / 64)


def test_ci_needs_three_launches_and_says_why() -> None:
    one, two = median_ci([1.0]), median_ci([1.0, 1.2])
    assert one.low is None and one.high is None and "one launch" in (one.reason or "")
    assert two.low is None and two.value == pytest.approx(1.1) and "2 launches" in (two.reason or "")
    three = median_ci([1.0, 1.3, 1.1])
    assert (three.low, three.value, three.high, three.level) == (1.0, 1.1, 1.3, 0.75)


def test_ci_reaches_95_percent_from_six_launches_and_narrows_with_more() -> None:
    assert median_ci(list(range(1, 7))).level >= 0.95  # type: ignore[operator]
    est = median_ci([float(x) for x in range(1, 21)])
    assert est.level is not None and est.level >= 0.95 and 1.0 < est.low < est.high < 20.0  # type: ignore[operator]


@pytest.mark.parametrize("seed", range(5))
def test_two_percent_within_five_percent_launch_noise_is_within_noise(seed: int) -> None:
    base = median_ci(_launches(1.00, 0.05, 8, seed))
    cand = median_ci(_launches(1.02, 0.05, 8, seed + 100))
    verdict, why = launch_verdict(base, cand, 0.05)
    assert verdict == "within noise", why


@pytest.mark.parametrize("seed", range(5))
def test_twenty_percent_is_worse_and_minus_twenty_better(seed: int) -> None:
    base = median_ci(_launches(1.00, 0.05, 8, seed))
    assert launch_verdict(base, median_ci(_launches(1.20, 0.05, 8, seed + 100)), 0.05)[0] == "worse"
    assert launch_verdict(base, median_ci(_launches(0.80, 0.05, 8, seed + 100)), 0.05)[0] == "better"


def test_separate_cis_below_the_threshold_and_single_launches_are_within_noise() -> None:
    tight_a, tight_b = median_ci([1.0, 1.001, 1.002]), median_ci([1.01, 1.011, 1.012])
    assert launch_verdict(tight_a, tight_b, 0.05) == ("within noise", "CIs separate but the change is within the 5% threshold")
    verdict, why = launch_verdict(median_ci([1.0]), median_ci([2.0]), 0.05)
    assert verdict == "within noise" and "one launch" in why


def test_paired_ratios_pair_rounds() -> None:
    assert paired_ratios({0: 2.0, 1: 3.0, 2: 9.0}, {0: 1.0, 1: 2.0}) == [2.0, 1.5]


def _auto(target: float = 0.03, max_launches: int = 10, max_s: float | None = None) -> Repeats:
    return Repeats.of(TrialConfig(suite="s", strategy="baseline", model="m", workload="train", repeats="auto",
                                  repeat_target=target, repeat_max=max_launches, repeat_max_s=max_s))  # fmt: skip


def test_auto_stops_at_the_target_once_the_ci_is_narrow() -> None:
    rule = _auto(target=0.03)
    stops = [rule.add(p, 1.0) for p in (1.00, 1.01, 0.99)]
    assert stops == [None, None, "target"] and rule.target_met() is True and rule.launches == 3


def test_auto_stops_at_the_launch_cap_and_records_the_target_missed() -> None:
    rule = _auto(target=0.03, max_launches=4)
    stops = [rule.add(p, 1.0) for p in (1.0, 1.3, 0.8, 1.2)]
    assert stops == [None, None, None, "max launches"] and rule.target_met() is False


def test_auto_stops_at_the_seconds_cap() -> None:
    rule = _auto(target=0.03, max_launches=10, max_s=25.0)
    stops = [rule.add(p, 10.0) for p in (1.0, 1.5, 0.7)]
    assert stops == [None, None, "max seconds"] and rule.target_met() is False


def test_the_seconds_cap_waits_for_the_three_launches_a_ci_needs() -> None:
    rule = _auto(target=0.03, max_launches=10, max_s=5.0)
    assert [rule.add(p, 30.0) for p in (1.0, 1.5, 0.7)] == [None, None, "max seconds"]


def test_fixed_repeats_stop_at_the_count_with_no_target() -> None:
    rule = Repeats.of(TrialConfig(suite="s", strategy="baseline", model="m", workload="train", repeats=2))
    assert [rule.add(1.0, 1.0), rule.add(1.5, 1.0)] == [None, "fixed"] and rule.target_met() is None


@pytest.mark.parametrize(("key", "value"), [("repeats", 0), ("repeats", "often"), ("repeat_target", 0.0), ("repeat_max_s", -1.0)])
def test_impossible_repeat_settings_are_rejected(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=key):
        TrialConfig(suite="s", strategy="baseline", model="m", workload="train", **{key: value})  # type: ignore[arg-type]


def test_auto_needs_a_cap_of_three_launches() -> None:
    with pytest.raises(ValueError, match="repeat_max must be >= 3"):
        TrialConfig(suite="s", strategy="baseline", model="m", workload="train", repeats="auto", repeat_max=2)


def test_default_repeats_keep_trial_ids_and_repeats_stay_out_of_the_case() -> None:
    plain = TrialConfig(suite="s", strategy="baseline", model="m", workload="train")
    auto = TrialConfig(suite="s", strategy="baseline", model="m", workload="train", repeats="auto")
    assert "repeats" not in plain._identity() and plain.trial_id != auto.trial_id
    assert plain.case() == auto.case()


def _row(p50: float, samples: list[float]) -> dict:
    return {"trial_id": "t", "status": "ok", "latency_p50_s": p50, "latency_samples_s": samples, "tokens_per_s": 100 / p50,
            "trial_wall_s": 2.0, "phase_spawn_s": p50, "null_reasons": json.dumps({"algbw_Bps": "not collectives"})}  # fmt: skip


def test_combine_takes_medians_over_launches_and_keeps_each_launch() -> None:
    rule = _auto()
    launches = []
    for r, p in enumerate((1.0, 1.2, 1.1)):
        rule.add(p, 2.0)
        launches.append(Launch(_row(p, [p, p]), [], r))
    row, _ = combine(launches, rule, round_seed=7)
    assert row["latency_p50_s"] == 1.1 and row["latency_p50_s_per_launch"] == [1.0, 1.2, 1.1]
    assert (row["latency_p50_s_ci_low"], row["latency_p50_s_ci_high"]) == (1.0, 1.2)
    assert row["tokens_per_s"] == pytest.approx(100 / 1.1) and row["tokens_per_s_ci_high"] == pytest.approx(100 / 1.0)
    assert row["latency_samples_s"] == [1.0, 1.0, 1.2, 1.2, 1.1, 1.1] and row["trial_wall_s"] == 6.0
    assert row["launches"] == 3 and row["launch_rounds"] == [0, 1, 2] and row["round_seed"] == 7
    assert row["repeat_stop"] == "unfinished" and row["repeat_target_met"] is None  # ±9%: the rule goes on
    assert "algbw_Bps_ci_low" not in row  # not measured: no CI, its reason stays


def test_the_profilers_times_keep_each_launch_and_a_ci_as_the_step_does() -> None:
    rule, launches = _auto(), []
    for r, (p, hidden, codec) in enumerate(((1.0, 0.008, 0.020), (1.2, 0.006, 0.023), (1.1, 0.013, 0.021))):
        rule.add(p, 2.0)
        launches.append(Launch({**_row(p, [p]), "comm_hidden_s_per_step": hidden, "codec_s_per_step": codec,
                                "comm_time_s_per_step": None}, [], r))  # fmt: skip
    row, _ = combine(launches, rule, round_seed=None)
    assert row["comm_hidden_s_per_step"] == 0.008 and row["comm_hidden_s_per_step_per_launch"] == [0.008, 0.006, 0.013]
    assert (row["comm_hidden_s_per_step_ci_low"], row["comm_hidden_s_per_step_ci_high"]) == (0.006, 0.013)
    assert row["codec_s_per_step"] == 0.021 and row["codec_s_per_step_per_launch"] == [0.020, 0.023, 0.021]
    assert row["comm_time_s_per_step"] is None and "comm_time_s_per_step_per_launch" not in row  # not profiled


def test_combine_of_one_launch_has_a_null_ci_with_its_reason() -> None:
    rule = Repeats.of(TrialConfig(suite="s", strategy="baseline", model="m", workload="train"))
    rule.add(1.0, 2.0)
    row, _ = combine([Launch(_row(1.0, [1.0]), [], 0)], rule, round_seed=None)
    reasons = json.loads(row["null_reasons"])
    assert row["latency_p50_s_ci_low"] is None and "one launch" in reasons["latency_p50_s_ci_low"]
    assert row["launches"] == 1 and row["repeat_stop"] == "fixed" and row["repeat_target_met"] is None


def _net_rows(strategy: str, p50s: dict[float, list[float]]) -> list[dict]:
    return [{"run_id": "r", "strategy": strategy, "network_rate_bps": rate, "latency_p50_s_per_launch": v,
             "launch_rounds": list(range(len(v)))} for rate, v in p50s.items()]  # fmt: skip


def test_break_even_over_rounds_is_resolved_when_every_round_crosses_inside_the_links() -> None:
    import pandas as pd

    from bench.predict.breakeven import ratio_crossing
    from bench.reports.network import round_break_even

    # Per round: 1 Gbit/s 1.2x slower than fp32, 50 Mbit/s 0.6x: each round crosses in between.
    base = pd.DataFrame(_net_rows("baseline", {1e9: [1.0, 1.02, 0.98, 1.0], 5e7: [2.0, 2.1, 1.9, 2.0]}))
    cand = pd.DataFrame(_net_rows("fp16", {1e9: [1.2, 1.21, 1.2, 1.19], 5e7: [1.2, 1.3, 1.1, 1.2]}))
    found = round_break_even(base, cand)
    assert found is not None and found.resolved and found.rounds == 4 and found.crossed == 4
    one, _ = ratio_crossing({1e9: 1.2, 5e7: 0.6})
    assert found.estimate is not None and 5e7 < found.estimate.low <= one <= found.estimate.high < 1e9  # type: ignore[operator]


def test_break_even_over_rounds_is_unresolved_when_a_round_does_not_cross() -> None:
    import pandas as pd

    from bench.reports.network import round_break_even

    base = pd.DataFrame(_net_rows("baseline", {1e9: [1.0, 1.0, 1.0], 5e7: [2.0, 2.0, 2.0]}))
    cand = pd.DataFrame(_net_rows("fp16", {1e9: [1.2, 0.9, 1.2], 5e7: [1.2, 1.2, 1.2]}))  # round 1: faster on both links
    found = round_break_even(base, cand)
    assert found is not None and not found.resolved and "1 of 3 rounds do not cross" in found.reason


def test_a_killed_sweep_keeps_the_noise_measured_before_it_stopped(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The reference's columns reach the rows as the sweep goes, not only at its end."""
    monkeypatch.setattr("bench.runner.noise.SORTS", 1)  # a shorter reference: its length is not under test
    from bench.runner import suite as suites
    from bench.runner.executors import LocalExecutor
    from bench.runner.sweep import run_sweep
    from bench.runner.trial import base_row
    from bench.storage.parquet import read_results

    calls = []

    def fake_run(cfg, run_id, params, log_dir, **launch):  # type: ignore[no-untyped-def]
        calls.append(cfg.trial_id)
        if len(calls) == 5:  # round 0 (2 launches), round 1 (2), then killed in round 2
            raise KeyboardInterrupt
        return {**base_row(cfg, run_id, params), "status": "ok", "latency_p50_s": 0.1, "trial_wall_s": 1.0}, []

    path = tmp_path / "killed.toml"
    path.write_text('name = "killed"\n[matrix]\nstrategies = ["baseline"]\nmodels = ["gpt2-tiny", "bert-tiny"]\n'
                    'workloads = ["train"]\nworld_sizes = [1]\n[settings]\nrepeats = 3\n')  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        run_sweep(suites.load(str(path)), tmp_path / "r", progress=False, executor=LocalExecutor(fake_run), round_seed=1)
    df = read_results([tmp_path / "r" / "killed"])
    assert len(df) == 2 and (df["repeat_stop"] == "unfinished").all()
    assert df["noise_ref_cv"].notna().all() and df["noisy"].notna().all()

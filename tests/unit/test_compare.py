"""The regression comparator on synthetic result rows: verdicts, statistics, history steps and the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.compare.history import change_points, history, noise_sigma
from bench.compare.metrics import METRICS
from bench.compare.regression import Comparison, Verdict, compare
from bench.compare.thresholds import Threshold, parse_threshold, parse_thresholds, threshold_for
from bench.errors import BenchError
from bench.storage.parquet import RunWriter

T0 = datetime(2025, 1, 1, tzinfo=UTC)
METRIC = {m.name: m for m in METRICS}


def samples(median: float, seed: int, n: int = 30, cv: float = 0.05) -> list[float]:
    """`n` step times, lognormal around `median` with about `cv` coefficient of variation."""
    return list(np.random.default_rng(seed).lognormal(np.log(median), cv, n))


def row(strategy: str = "baseline", *, run: str = "base", status: str = "ok", latency: list[float] | None = None,
        key: str | None = None, steps: int = 20, at: int = 0, **columns: Any) -> dict[str, Any]:
    """One trials-table row; its history key follows the case (strategy, steps) unless `key` is given."""
    config = {"suite": "s", "strategy": strategy, "model": "gpt2-tiny", "workload": "train", "steps": steps, "data": {"seed": 1}}
    return {
        "schema_version": 1, "run_id": run, "trial_id": f"{strategy}-{steps}", "suite": "s", "strategy": strategy,
        "model": "gpt2-tiny", "workload": "train", "device": "cpu", "world_size": 2, "steps": steps, "status": status,
        "error": None if status == "ok" else "Traceback ...\nRuntimeError: boom", "git_sha": f"sha{at:02d}",
        "latency_samples_s": latency if status == "ok" else None, "mem_rss_peak_bytes_max": 500_000_000 if status == "ok" else None,
        "comm_logical_bytes_per_step": 2e6 if status == "ok" else None, "model_params": 1_500_000, "torch_version": "2.13.0",
        "started_at": T0 + timedelta(hours=at), "history_key": key or f"k-{strategy}-{steps}", "config": json.dumps(config),
        **columns,
    }  # fmt: skip


def frame(*rows: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def only(cmp: Comparison, metric: str) -> Verdict:
    (found,) = [f for f in cmp.findings if f.metric == metric]
    return found.verdict


# --- pairwise: noisy metrics ---------------------------------------------------------------------


def launches(median: float, seed: int, n: int = 5, noise: float = 0.05) -> list[float]:
    """`n` launch p50s uniformly within ±`noise` of `median`."""
    return list(median * (1 + np.random.default_rng(seed).uniform(-noise, noise, n)))


def test_a_20_percent_latency_regression_over_launches_is_worse() -> None:
    base = frame(row(latency=samples(0.1, seed=1), latency_p50_s_per_launch=launches(0.1, 1)))
    cand = frame(row(run="cand", latency=samples(0.12, seed=2), latency_p50_s_per_launch=launches(0.12, 2)))
    cmp = compare(base, cand)
    (found,) = cmp.regressions()
    assert found.metric == "latency_p50" and found.verdict is Verdict.WORSE and found.launches == (5, 5)
    assert found.rel_change == pytest.approx(0.2, abs=0.06) and found.p_value is None and found.base_ci is not None
    assert cmp.has_regressions() and "worse" in cmp.summary() and "launches 5 vs 5" in cmp.summary()


def test_a_2_percent_shift_within_5_percent_launch_noise_is_not_flagged() -> None:
    for seed in range(5):
        base = frame(row(latency=samples(0.1, seed), latency_p50_s_per_launch=launches(0.1, seed)))
        cand = frame(row(run="cand", latency=samples(0.102, seed + 100), latency_p50_s_per_launch=launches(0.102, seed + 100)))
        assert only(compare(base, cand), "latency_p50") is Verdict.WITHIN_NOISE


def test_one_launch_a_side_gives_no_verdict_however_far_apart_its_steps() -> None:
    # Same work, two launches: 30 steps each, 60% apart, a rank test would say p < 1e-10.
    cmp = compare(frame(row(latency=samples(0.1, seed=1))), frame(row(run="cand", latency=samples(0.16, seed=2))))
    (found,) = [f for f in cmp.findings if f.metric == "latency_p50"]
    assert found.verdict is Verdict.WITHIN_NOISE and found.p_value is None and "no launch-level CI" in found.note
    assert found.launches == (1, 1) and not cmp.has_regressions()


def test_repeated_runs_pool_their_launches() -> None:
    """Rows of one history key (e.g. compare-revs' rounds, one launch each) are launches of one side."""
    def side(run: str, median: float, seed: int) -> pd.DataFrame:
        return frame(*(row(run=f"{run}{i}", latency=samples(v, i)) for i, v in enumerate(launches(median, seed, n=4))))

    assert only(compare(side("b", 0.1, 1), side("c", 0.13, 2)), "latency_p50") is Verdict.WORSE


def test_latency_threshold_is_configurable_and_alpha_checked() -> None:
    base = frame(row(latency=samples(0.1, 1), latency_p50_s_per_launch=launches(0.1, 1)))
    cand = frame(row(run="cand", latency=samples(0.12, 2), latency_p50_s_per_launch=launches(0.12, 2)))
    assert only(compare(base, cand, [Threshold("latency_p50", 0.5)]), "latency_p50") is Verdict.WITHIN_NOISE
    with pytest.raises(BenchError, match="alpha"):
        compare(base, cand, alpha=1.5)


def test_memory_with_one_value_a_side_uses_the_threshold_alone() -> None:
    lat = samples(0.1, 1)
    more = compare(frame(row(latency=lat)), frame(row(run="cand", latency=lat, mem_rss_peak_bytes_max=560_000_000)))
    found = next(f for f in more.findings if f.metric == "mem_rss_peak")
    assert found.verdict is Verdict.WORSE and found.p_value is None and found.rel_change == pytest.approx(0.12)
    less = compare(frame(row(latency=lat)), frame(row(run="cand", latency=lat, mem_rss_peak_bytes_max=540_000_000)))
    assert only(less, "mem_rss_peak") is Verdict.WITHIN_NOISE  # +8% < 10%


def test_memory_over_repeated_runs_needs_significance_too() -> None:
    def side(run: str, values: list[int]) -> pd.DataFrame:
        return frame(*(row(run=f"{run}{i}", latency=samples(0.1, i), mem_rss_peak_bytes_max=v) for i, v in enumerate(values)))

    spread = side("c", [300, 900, 450, 800, 700])  # median +20%, but it overlaps the base's values
    assert only(compare(side("b", [500, 520, 480, 510, 490]), spread), "mem_rss_peak") is Verdict.WITHIN_NOISE
    shifted = side("c", [600, 624, 576, 612, 588])  # +20%, every value above the base's
    assert only(compare(side("b", [500, 520, 480, 510, 490]), shifted), "mem_rss_peak") is Verdict.WORSE


# --- pairwise: exact metrics and status ------------------------------------------------------------


def test_one_byte_more_per_step_is_caught_and_a_threshold_can_allow_it() -> None:
    lat = samples(0.1, 1)
    base, cand = frame(row(latency=lat)), frame(row(run="cand", latency=lat, comm_logical_bytes_per_step=2e6 + 1))
    (found,) = compare(base, cand).regressions()
    assert (found.metric, found.verdict, found.base, found.candidate) == ("comm_logical_bytes_per_step", Verdict.WORSE, 2e6, 2e6 + 1)
    assert "comm_logical_bytes_per_step  2000000 -> 2000001 B/step" in compare(base, cand).summary()
    assert not compare(base, cand, parse_thresholds(["bytes:1%"])).has_regressions()
    fewer = frame(row(run="cand", latency=lat, comm_logical_bytes_per_step=1e6))
    assert only(compare(base, fewer), "comm_logical_bytes_per_step") is Verdict.BETTER


def test_exact_metrics_null_on_both_sides_are_equal_and_on_one_side_not_comparable() -> None:
    lat = samples(0.1, 1)
    cmp = compare(frame(row(latency=lat)), frame(row(run="cand", latency=lat, transfer_payload_bytes=1000)))
    assert only(cmp, "model_bytes") is Verdict.WITHIN_NOISE  # null == null
    assert only(cmp, "transfer_payload_bytes") is Verdict.NOT_COMPARABLE and not cmp.has_regressions()


def test_newly_failing_and_fixed_trials_are_reported() -> None:
    lat = samples(0.1, 1)
    base = frame(row("baseline", latency=lat), row("fp16_compress", status="failed"))
    cand = frame(row("baseline", run="cand", status="failed"), row("fp16_compress", run="cand", latency=lat))
    cmp = compare(base, cand)
    verdicts = {(f.trial.strategy, f.verdict) for f in cmp.findings}
    assert verdicts == {("baseline", Verdict.NEWLY_FAILING), ("fp16_compress", Verdict.FIXED)}
    assert [f.verdict for f in cmp.regressions()] == [Verdict.NEWLY_FAILING]
    assert "newly failing  baseline gpt2-tiny train cpu x2  status: RuntimeError: boom" in cmp.summary()
    assert "fixed" in cmp.summary()


def test_rows_with_different_history_keys_are_not_comparable_and_the_field_is_named() -> None:
    lat = samples(0.1, 1)
    base = frame(row("baseline", latency=lat), row("topk", latency=lat))
    cand = frame(row("baseline", run="cand", latency=lat, steps=10))
    cmp = compare(base, cand)
    assert cmp.findings == () and not cmp.has_regressions()
    by_side = {(u.side, u.trial.strategy): u for u in cmp.unmatched}
    assert set(by_side) == {("base", "baseline"), ("candidate", "baseline"), ("base", "topk")}
    (diff,) = by_side[("candidate", "baseline")].diffs
    assert (diff.field, diff.base, diff.candidate) == ("steps", 20, 10)
    assert by_side[("base", "topk")].closest_key is None
    text = cmp.summary()
    assert "candidate only  baseline gpt2-tiny train cpu x2: differs from k-baseline-20 in steps 20 -> 10" in text
    assert "no candidate trial with the same strategy/model/workload" in text


def test_a_context_change_is_named_when_the_config_is_the_same() -> None:
    lat = samples(0.1, 1)
    cmp = compare(frame(row(latency=lat)), frame(row(run="cand", latency=lat, key="other", torch_version="2.14.0")))
    (diff,) = next(u for u in cmp.unmatched if u.side == "candidate").diffs
    assert (diff.field, diff.base, diff.candidate) == ("torch_version", "2.13.0", "2.14.0")


# --- thresholds -----------------------------------------------------------------------------------


def test_threshold_strings_parse_like_pytest_benchmark() -> None:
    assert parse_threshold("latency_p50:5%") == Threshold("latency_p50", 0.05)
    assert parse_threshold(" mem : 10% ") == Threshold("mem", 0.10)
    given = parse_thresholds(["bytes:0.5%", "model_bytes:2%", "latency:20%"])
    assert threshold_for(METRIC["comm_calls_per_step"], given) == 0.005  # the group's
    assert threshold_for(METRIC["model_bytes"], given) == 0.02  # its own beats the group's
    assert threshold_for(METRIC["latency_p50"], given) == 0.2
    assert threshold_for(METRIC["mem_rss_peak"], given) == 0.1  # the default


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("latency_p50", "expected METRIC:PCT%"),
        ("latency_p50:5", "expected METRIC:PCT%"),
        (":5%", "expected METRIC:PCT%"),
        ("latency_p50:five%", "'five%' is not a percentage"),
        ("latency_p50:-5%", "must be a finite percentage >= 0"),
        ("latency_p50:nan%", "must be a finite percentage >= 0"),
        ("speed:5%", "unknown metric 'speed'; known: analytic_logical_bytes_per_step_per_rank, bytes, "),
    ],
)
def test_bad_threshold_strings_are_one_clear_bench_error(text: str, message: str) -> None:
    with pytest.raises(BenchError, match=r"^threshold ") as err:
        parse_threshold(text)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_every_bad_threshold_is_reported_at_once() -> None:
    with pytest.raises(BenchError) as err:
        parse_thresholds(["bytes:0%", "a:1%", "b"])
    assert "'a:1%'" in str(err.value) and "'b'" in str(err.value)


# --- history --------------------------------------------------------------------------------------


def test_noise_sigma_is_the_scaled_mad_of_successive_differences() -> None:
    # Differences 1, -1, 3, -1, 1: median 1, absolute deviations 0, 2, 2, 2, 0 -> MAD 2.
    x = np.array([0.0, 1.0, 0.0, 3.0, 2.0, 3.0])
    assert noise_sigma(x) == pytest.approx(1.482602218505602 * 2 / np.sqrt(2))
    noisy = np.random.default_rng(0).normal(0, 0.5, 4000)
    noisy[2000:] += 10.0  # a step adds one large difference, which the median ignores
    assert noise_sigma(noisy) == pytest.approx(0.5, rel=0.05)


def test_change_points_respect_the_minimum_segment_length() -> None:
    flat = [1.0] * 12
    assert change_points(flat) == [] and change_points([1.0] * 5 + [2.0]) == []  # too short for two segments
    assert change_points([1.0] * 6 + [2.0] * 6) == [6]  # a noiseless step (exact metrics)
    assert change_points([1.0] * 6 + [2.0] + [1.0] * 5) == []  # one run cannot move a 3-run segment's median
    assert change_points([1.0] * 6 + [2.0] * 2 + [1.0] * 4, min_size=2) == [6, 8]
    with pytest.raises(BenchError, match="min_size"):
        change_points(flat, min_size=1)


def _history_rows() -> pd.DataFrame:
    """30 nightly runs of 3 trials: a 12% latency step at run 18 and a 50% blip at run 9 (baseline),
    a byte step at run 20 (fp16_compress), pure noise (topk); run 25 failed for topk."""
    rows = []
    for i in range(30):
        base_lat = 0.1 * (1.12 if i >= 18 else 1.0) * (1.5 if i == 9 else 1.0)
        rows += [
            row("baseline", run=f"r{i:02d}", at=i, latency=samples(base_lat, seed=i)),
            row("fp16_compress", run=f"r{i:02d}", at=i, latency=samples(0.08, seed=100 + i),
                comm_logical_bytes_per_step=1e6 if i < 20 else 1.25e6),
            row("topk", run=f"r{i:02d}", at=i, latency=samples(0.09, seed=200 + i), status="failed" if i == 25 else "ok"),
        ]  # fmt: skip
    return frame(*rows).sample(frac=1.0, random_state=0)  # storage order is not commit order


def test_a_persistent_step_is_found_at_its_commit_and_a_blip_is_not() -> None:
    found = history(_history_rows())
    steps = {(s.trial.strategy, s.metric): s for s in found.steps}
    assert set(steps) == {("baseline", "latency_p50"), ("fp16_compress", "comm_logical_bytes_per_step")}
    lat = steps[("baseline", "latency_p50")]
    assert (lat.git_sha, lat.run_id, lat.index, lat.direction) == ("sha18", "r18", 18, "up")
    assert lat.rel_change == pytest.approx(0.12, abs=0.015) and lat.regression  # over the 10% default
    nbytes = steps[("fp16_compress", "comm_logical_bytes_per_step")]
    assert (nbytes.git_sha, nbytes.rel_change, nbytes.regression) == ("sha20", pytest.approx(0.25), True)
    assert found.has_regressions() and found.runs == 30
    assert "REGRESSION fp16_compress gpt2-tiny train cpu x2  comm_logical_bytes_per_step up at sha20" in found.summary()


def test_a_step_within_its_threshold_is_reported_but_is_no_regression() -> None:
    found = history(_history_rows(), [Threshold("latency", 0.2)])
    assert len(found.steps) == 2 and [(s.trial.strategy, s.git_sha) for s in found.regressions()] == [("fp16_compress", "sha20")]
    assert "step       baseline gpt2-tiny train cpu x2  latency_p50 up at sha18" in found.summary()


# --- CLI ------------------------------------------------------------------------------------------


def _write(directory: Path, run: str, *rows: dict[str, Any]) -> Path:
    writer = RunWriter(directory, run)
    for r in rows:
        writer.add(r, [])
    return writer.trials_path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_exits_1_on_a_regression_and_0_without(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    base = _write(tmp_path / "base", "b", row(latency=samples(0.1, 1), latency_p50_s_per_launch=launches(0.1, 1)))
    slow = _write(tmp_path / "slow", "s", row(run="s", latency=samples(0.12, 2), latency_p50_s_per_launch=launches(0.12, 2)))
    same = _write(tmp_path / "same", "o", row(run="o", latency=samples(0.1, 3), latency_p50_s_per_launch=launches(0.1, 3)))
    code, out, _ = run_cli(capsys, "compare", base, tmp_path / "slow", "--json", tmp_path / "out.json")
    assert code == 1 and "regressions:\n  worse" in out and "latency_p50" in out
    stored = json.loads((tmp_path / "out.json").read_text())
    assert [f["verdict"] for f in stored["findings"] if f["metric"] == "latency_p50"] == ["worse"]
    assert run_cli(capsys, "compare", base, same)[0] == 0
    assert run_cli(capsys, "compare", base, slow, "--threshold", "latency_p50:25%")[0] == 0


def test_cli_history_mode(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rows = _history_rows()
    for run_id, run_rows in rows.groupby("run_id"):
        _write(tmp_path / "nightly", str(run_id), *(r.dropna().to_dict() for _, r in run_rows.iterrows()))
    code, out, _ = run_cli(capsys, "compare", "--history", tmp_path / "nightly")
    assert code == 1 and "comm_logical_bytes_per_step up at sha20" in out and "latency_p50 up at sha18" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--threshold", "latency_p50=5%"], "expected METRIC:PCT%"),
        (["--alpha", "0"], "alpha must be in (0, 1)"),
        (["{missing}"], "expected BASE CANDIDATE"),
        (["{missing}", "{base}"], "no such results file or directory"),
        (["{empty}", "{base}"], "no results files under"),
        (["{corrupt}", "{base}"], "corrupt results file"),
        (["{base}", "--history", "{base}"], "not both"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                               argv: list[str], message: str) -> None:  # fmt: skip
    base = _write(tmp_path / "base", "b", row(latency=samples(0.1, 1)))
    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt.parquet").write_bytes(b"garbage")
    paths = {"base": base, "missing": tmp_path / "nope", "empty": tmp_path / "empty", "corrupt": tmp_path / "corrupt.parquet"}
    argv = [a.format(**paths) for a in argv]
    if argv[0].startswith("--") and argv[0] != "--history":
        argv = [str(base), str(base), *argv]
    code, _, err = run_cli(capsys, "compare", *argv)
    assert code == 2 and err.startswith("commbench: error: ") and err.count("\n") == 1
    assert message in err

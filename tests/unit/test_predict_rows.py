"""The predictor's adapter to rows: synthetic calibration and network rows drawn from a known model are predicted exactly."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bench.network.spec import tbf_burst_bytes
from bench.predict import holdout
from bench.predict.breakeven import ratio_crossing
from bench.predict.collectives import seconds
from bench.predict.present import validate_rows
from bench.predict.step import exposed

LINKS = {"fast": (1e9, 200e-6), "mid": (2e8, 300e-6), "slow": (5e7, 400e-6)}  # rate bit/s, alpha s
EFF = 0.95  # beta = EFF x rate / 8
COMPUTE = {"baseline": 0.10, "fp16_compress": 0.11}
GRAD = 6e6  # bytes all-reduced per step by the baseline, in 2 calls


def _rows(compute: dict[str, float] = COMPUTE, rounds: dict[str, list[float]] | None = None,
          fp16_beta: float | None = None, hidden: dict[str, float] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Rows drawn from the model; `rounds`: strategy -> a factor per round on its launches (three launches a row);
    `fp16_beta`: fp16 all-reduces run at that share of fp32's bandwidth, and the calibration timed them apart;
    `hidden`: strategy -> the communication its steps hide behind compute (s), profiled on every link."""
    trials, comm = [], []
    common = {"status": "ok", "world_size": 2, "nnodes": 2, "batch_size": 8, "seq_len": 64, "steps": 8, "run_id": "r"}
    kinds = [("all_reduce", "float32", 1.0), ("all_gather", "float32", 1.0)] + ([("all_reduce", "float16", fp16_beta)] if fp16_beta else [])
    for link, (rate, alpha) in LINKS.items():
        beta = EFF * rate / 8
        for op, dtype, share in kinds:
            for size in (16384, 262144, 2097152, 8388608):
                trials.append({**common, "workload": "collectives", "model": None, "strategy": "baseline", "network": link,
                               "network_rate_bps": rate, "trial_id": f"c-{link}-{op}-{dtype}-{size}",
                               "metrics": json.dumps({"op": op, "size_bytes": size, "dtype": dtype}),
                               "latency_p50_s": seconds(op, size, 2, alpha, beta * share, "gloo")})  # fmt: skip
        for strategy, c in compute.items():
            fp16 = strategy == "fp16_compress"
            per_call, b = GRAD / 2 / (2 if fp16 else 1), beta * (fp16_beta if fp16 and fp16_beta else 1.0)
            tid = f"t-{link}-{strategy}"
            # 2 calls of serial bytes S each (gloo ring, n = 2); the tbf bucket is full at the step's start
            step = c + exposed(2 * seconds("all_reduce", per_call, 2, alpha, b, "gloo") - min(tbf_burst_bytes(rate), 2 * per_call) / b,
                               (hidden or {}).get(strategy, 0.0))
            profiled = {"comm_hidden_s_per_step": hidden.get(strategy, 0.0)} if hidden is not None else {}
            launches = {"launch_rounds": [0, 1, 2], "latency_p50_s_per_launch": [step * f for f in rounds[strategy]]} if rounds else {}
            trials.append({**common, "workload": "train", "model": "gpt2-tiny", "strategy": strategy, "network": link,
                           "network_rate_bps": rate, "trial_id": tid, "metrics": "{}", "latency_p50_s": step, **launches, **profiled})  # fmt: skip
            for rank in (0, 1):
                comm.append({"run_id": "r", "trial_id": tid, "rank": rank, "op": "all_reduce", "calls": 16, "msg_bytes": int(16 * per_call),
                             "dtype": "float16" if fp16 else "float32"})  # fmt: skip
    return pd.DataFrame(trials), pd.DataFrame(comm)


def test_rows_drawn_from_the_model_are_predicted_exactly_on_every_held_out_link() -> None:
    v = validate_rows(*_rows(), None)
    for link, (rate, alpha) in LINKS.items():
        ab = v.links[link].by_op["all_reduce"]
        assert ab.alpha_s == pytest.approx(alpha, rel=1e-6) and ab.beta_Bps == pytest.approx(EFF * rate / 8, rel=1e-6)
    assert set(v.folds) == set(LINKS) and len(v.outcomes) == len(LINKS) * len(COMPUTE)
    assert all(abs(o.error) < 1e-9 for o in v.outcomes)
    (row,) = v.breakevens  # fp16 saves 3 MB a step and costs 10 ms more compute: t = c + 8 W / (EFF r) + latency
    assert row.strategy == "fp16_compress" and row.predicted_bps == pytest.approx(8 * 3e6 / (EFF * 0.01), rel=0.05)


def test_calibration_rows_alone_have_no_trial_to_predict_and_the_report_builds() -> None:
    from bench.errors import BenchError
    from bench.reports import predicted

    trials, comm = _rows()
    calibration = trials[trials["workload"] == "collectives"]  # what `commbench sweep calibration` writes
    assert predicted.blocks(calibration, comm.iloc[0:0]) == []  # the sweep's report crashed here in pandas
    with pytest.raises(BenchError, match="train rows"):
        validate_rows(calibration, comm.iloc[0:0], None)


def test_a_holdout_link_that_was_never_measured_is_an_error() -> None:
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="no network trial on that link"):
        validate_rows(*_rows(), [{"10gbit"}])


SLOW_FP16 = {"baseline": 0.10, "fp16_compress": 0.20}  # fp16 saves 3 MB a step for 100 ms more compute: crossing ~250 Mbit/s


def test_the_measured_break_even_over_rounds_is_what_the_prediction_is_checked_against() -> None:
    # Every round scales both strategies alike: each round crosses where the medians do.
    (row,) = validate_rows(*_rows(SLOW_FP16, {"baseline": [1.0, 1.05, 0.95], "fp16_compress": [1.0, 1.05, 0.95]}), None).breakevens
    assert row.rounds is not None and row.rounds.rounds == 3 and row.rounds.resolved
    steps = {(o.strategy, o.rate_bps): o.measured_s for o in validate_rows(*_rows(SLOW_FP16), None).observed}
    medians = ratio_crossing({r: steps["fp16_compress", r] / steps["baseline", r] for s, r in steps if s == "baseline"})[0]
    assert row.rounds.estimate.value == pytest.approx(medians, rel=1e-9)  # type: ignore[union-attr]
    assert 5e7 < row.reference_bps < 1e9 and row.within is True  # type: ignore[operator]


def test_an_unresolved_break_even_over_rounds_is_not_checked() -> None:
    # In round 2 fp16 is 3x slower everywhere: that round never crosses, so the break-even is unresolved.
    (row,) = validate_rows(*_rows(SLOW_FP16, {"baseline": [1.0, 1.0, 1.0], "fp16_compress": [1.0, 1.0, 3.0]}), None).breakevens
    assert row.rounds is not None and not row.rounds.resolved and "1 of 3 rounds do not cross" in row.rounds.reason
    assert row.measured_bps is not None  # the medians' curves still cross,
    assert row.reference_bps is None and row.within is None  # but the check waits for a resolved measurement


def test_the_network_section_shows_one_model_the_calibrated_one_where_there_is_a_calibration() -> None:
    from bench.reports import network
    from bench.reports.blocks import Table

    def heads(rows: pd.DataFrame, comm: pd.DataFrame) -> list[list[str]]:
        section = network.section(rows, comm)
        assert section is not None
        return [[c.head for c in b.columns] for b in section.blocks if isinstance(b, Table)]

    trials, comm = _rows()
    calibrated = heads(trials, comm)  # one steps table (the calibration's collectives are no case), then the model's
    assert sum("link MB/step one way" in h for h in calibrated) == 1
    assert "break-even (model)" not in calibrated[0] and "break-even over rounds [CI]" in calibrated[0]
    assert any("predicted" in " ".join(h) for h in calibrated[1:])
    alone = heads(trials[trials["workload"] == "train"], comm)  # no collectives rows: the simple model's columns
    assert len(alone) == 1 and "break-even (model)" in alone[0] and "model error" in alone[0]


def test_the_model_figure_draws_each_measured_line_in_rate_order_beside_its_dashed_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.reports import plots, predicted

    drawn: list[plots.Line] = []
    monkeypatch.setattr(plots, "lines", lambda panels, xlabel, legend=True: drawn.extend(ln for p in panels for ln in p.lines) or "")
    predicted.blocks(*_rows())
    measured = [ln for ln in drawn if not ln.dashed]
    assert measured and all(list(ln.x) == sorted(ln.x) for ln in measured)  # links came in name order: fast, mid, slow
    assert {ln.group for ln in measured} == {ln.group for ln in drawn if ln.dashed} == set(COMPUTE)


def test_every_step_in_the_network_table_carries_its_interval_over_launches() -> None:
    from bench.reports import fmt, network

    trials, comm = _rows()
    train = trials["workload"] == "train"
    trials.loc[train, "latency_p50_s_ci_low"] = trials.loc[train, "latency_p50_s"] * 0.9
    trials.loc[train, "latency_p50_s_ci_high"] = trials.loc[train, "latency_p50_s"] * 1.1
    trials.loc[train, "ci_level"], trials.loc[train, "launches"] = 0.75, 3
    (case,) = network.analyse(trials)
    rows = network.table(case).rows
    assert all(c.text.endswith("(75%)") and "[" in c.text for row in rows for c in row[2:5])  # fast, mid, slow
    assert {row[1].text for row in rows} == {fmt.DASH}  # no unshaped veth in these rows: no interval to show
    twice = pd.concat([trials, trials.assign(run_id="r2")])  # a median over two runs has no interval of its own
    (case,) = network.analyse(twice)
    assert all("median of 2 runs" in c.text for row in network.table(case).rows for c in row[2:5])


def test_the_held_out_error_is_told_apart_for_trials_of_sweeps_flagged_noisy() -> None:
    trials, comm = _rows()
    slow = (trials["workload"] == "train") & (trials["network"] == "slow")
    trials["suite"], trials["noisy"], trials["noise_ref_cv"] = "network", False, 0.05
    trials.loc[slow, ["run_id", "noisy", "noise_ref_cv"]] = ["n", True, 0.6]  # the slow link's trials ran in a NOISY sweep
    comm.loc[comm["trial_id"].str.startswith("t-slow-"), "run_id"] = "n"
    v = validate_rows(trials, comm, None)
    assert {r: n.noisy for r, n in v.noise.items()} == {"r": False, "n": True}
    assert [o.trial.link for o in v.outcomes if v.noisy(o)] == ["slow", "slow"]
    text = v.error_summary()
    assert text.startswith("MAPE 0.0% over 6 held-out trials; worst ")
    assert "; 2 of them from sweeps flagged NOISY (quiet sweeps only: MAPE 0.0% over 4 held-out trials; worst " in text
    trials["noisy"] = None  # not measured: nothing is set apart
    assert "NOISY" not in validate_rows(trials, comm, None).error_summary()


def test_a_strategys_codec_cost_is_its_compute_less_the_baselines_per_gradient_element() -> None:
    (cost,) = validate_rows(*_rows(), None).codecs  # fp16 computes 10 ms more than fp32; fp32 all-reduces 6 MB a step
    assert (cost.strategy, cost.elements) == ("fp16_compress", GRAD / 4)
    assert cost.seconds == pytest.approx(0.01, abs=1e-9) and cost.per_element_s == pytest.approx(0.01 / 1.5e6, rel=1e-6)
    assert cost.low_s == pytest.approx(0.01, abs=1e-9) and cost.high_s == pytest.approx(0.01, abs=1e-9)  # rows without noise


def test_the_replayed_codec_is_read_from_the_rows_and_predicts_without_a_compute_per_strategy() -> None:
    trials, comm = _rows()  # fp16 computes 10 ms more than fp32
    assert validate_rows(trials, comm, None).codecs[0].replayed is None  # rows from before codec_s_per_step
    assert {o.trial.strategy for o in validate_rows(trials, comm, None, holdout.Way("replayed")).outcomes} == {"baseline"}
    trials["codec_s_per_step"] = [0.01 if s == "fp16_compress" and w == "train" else None for s, w in zip(trials.strategy, trials.workload)]
    v = validate_rows(trials, comm, None, holdout.Way("replayed"))
    assert {o.trial.strategy for o in v.outcomes} == set(COMPUTE) and all(abs(o.error) < 1e-9 for o in v.outcomes)
    fp16 = [o for o in v.outcomes if o.trial.strategy == "fp16_compress"]
    assert all(o.predicted.codec_s == pytest.approx(0.01) and o.predicted.compute_s == pytest.approx(COMPUTE["baseline"]) for o in fp16)
    assert v.codecs[0].replayed == holdout.Codec(0.01, 0.01, 0.01)
    (be,) = v.breakevens
    fitted = validate_rows(trials, comm, None).breakevens[0]
    assert be.predicted_bps == pytest.approx(fitted.predicted_bps, rel=1e-6)  # the same 10 ms, either way


def test_fp16_all_reduces_are_priced_on_their_own_calibration_where_it_timed_them() -> None:
    """Rows where gloo's fp16 all-reduce runs at 60% of fp32's bandwidth: exact with the fp16 calibration rows, off without."""
    trials, comm = _rows(fp16_beta=0.6)
    v = validate_rows(trials, comm, None)
    assert all(abs(o.error) < 1e-9 for o in v.outcomes)
    assert all(c.dtype == "float16" for o in v.observed if o.strategy == "fp16_compress" for c in o.calls)
    without = trials[~trials.metrics.str.contains("float16")]
    off = [o for o in validate_rows(without, comm, None).outcomes if o.trial.strategy == "fp16_compress"]
    assert max(abs(o.error) for o in off) > 0.02  # priced at fp32's beta: the slow links' fp16 steps come out short


def test_the_profiled_overlap_is_read_from_the_rows_and_hides_that_much_communication() -> None:
    """fp32 hides 60 ms of its all-reduces behind compute (comm_hidden_s_per_step): exact with the overlap; without it,
    off on the fast link, where that is all its communication, and its break-even against fp16 moves up."""
    trials, comm = _rows(hidden={"baseline": 0.06})
    v = validate_rows(trials, comm, None)
    assert all(abs(o.error) < 1e-9 for o in v.outcomes)
    base = {o.trial.link: o.predicted for o in v.outcomes if o.trial.strategy == "baseline"}
    assert base["fast"].overlap_s == pytest.approx(base["fast"].comm_s) and base["slow"].overlap_s == pytest.approx(0.06)
    none = validate_rows(trials, comm, None, holdout.Way(overlap="none"))
    assert max(abs(o.error) for o in none.outcomes) > 0.05
    (profiled,), (blind,) = v.breakevens, none.breakevens
    assert profiled.predicted_bps < blind.predicted_bps  # fp32 hides some of what fp16 saves
    assert validate_rows(*_rows(), None).outcomes[0].predicted.overlap_s == 0.0  # rows without a profiler pass hide nothing


def test_the_model_figure_has_a_panel_per_case_and_the_tables_show_the_overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.reports import plots, predicted
    from bench.reports.blocks import Paragraph, Table

    trials, comm = _rows(hidden={"baseline": 0.004, "fp16_compress": 0.004})
    train = trials[trials["workload"] == "train"].assign(world_size=4, nnodes=4, trial_id=lambda d: d["trial_id"] + "-4")
    trials = pd.concat([trials, train], ignore_index=True)
    comm = pd.concat([comm, comm.assign(trial_id=comm["trial_id"] + "-4")], ignore_index=True)
    panels: list[plots.LinePanel] = []
    monkeypatch.setattr(plots, "lines", lambda p, xlabel, legend=True: panels.extend(p) or "")
    blocks = predicted.blocks(trials, comm)
    assert len(panels) == 2 and len({p.title for p in panels}) == 2  # a 2-node and a 4-node panel, not one mixing them
    assert all(len(ln.x) == len(set(ln.x)) == len(LINKS) for p in panels for ln in p.lines if not ln.dashed)
    (summary,) = [b for b in blocks if isinstance(b, Paragraph)]
    assert "hid behind compute" in summary.text
    outcomes, evens = [b for b in blocks if isinstance(b, Table)]
    hidden = [c.head for c in outcomes.columns].index("hidden")
    assert {row[hidden].text for row in outcomes.rows} == {"4.00"}  # each strategy's profiled 4 ms, on every held-out link
    assert [c.head for c in evens.columns][0] == "case" and len({row[0].text for row in evens.rows}) == 2

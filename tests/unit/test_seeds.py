"""The `seeds` suite axis and the report's mean ± 95% CI over seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from bench.errors import BenchError
from bench.reports.cases import ReportData
from bench.reports.html import build_page
from bench.reports.seeds import MeanCI, aggregate, markdown
from bench.runner.suite import from_dict
from bench.storage.parquet import read_comm, read_results
from tests.unit.report_fixtures import T0, Run, trial


def _suite(matrix: dict[str, Any], settings: dict[str, Any] | None = None) -> dict[str, Any]:
    base = {"strategies": ["baseline", "fp16_compress"], "models": ["gpt2-tiny"], "world_sizes": [2]}
    return {"name": "s", "matrix": {**base, **matrix}, "settings": settings or {"steps": 2}}


def test_seeds_axis_expands_each_trial_once_per_seed_and_keeps_one_case() -> None:
    suite = from_dict(_suite({"seeds": [0, 1, 2]}), Path("s.toml"))
    assert len(suite.trials) == 2 * 3
    by_strategy: dict[str, list[Any]] = {}
    for t in suite.trials:
        by_strategy.setdefault(t.config.strategy, []).append(t.config)
    for cfgs in by_strategy.values():
        assert sorted(c.seed for c in cfgs) == [0, 1, 2]
        assert len({c.trial_id for c in cfgs}) == 3  # three trials...
        assert len({str(c.case()) for c in cfgs}) == 1  # ...of one case (seed is not in the history key)


def test_without_seeds_axis_the_setting_decides() -> None:
    suite = from_dict(_suite({}, {"steps": 2, "seed": 7}), Path("s.toml"))
    assert [t.config.seed for t in suite.trials] == [7, 7]


@pytest.mark.parametrize(
    ("matrix", "settings", "message"),
    [
        ({"seeds": [0, 0]}, None, "repeated"),
        ({"seeds": [-1]}, None, "non-negative integers"),
        ({"seeds": ["1"]}, None, "non-negative integers"),
        ({"seeds": [True]}, None, "non-negative integers"),
        ({"seeds": [1.5]}, None, "non-negative integers"),
        ({"seeds": []}, None, "matrix.seeds must be a non-empty list"),
        ({"seeds": [0, 1]}, {"seed": 3}, "settings.seed"),
        ({"seed": [0, 1]}, None, "matrix.seeds"),
    ],
)
def test_seeds_axis_is_strictly_validated(matrix: dict[str, Any], settings: dict[str, Any] | None, message: str) -> None:
    with pytest.raises(BenchError, match=message):
        from_dict(_suite(matrix, settings), Path("s.toml"))


@pytest.mark.parametrize("values", [[2.0, 2.5, 3.5], [1.0, 1.1], [0.3, -0.2, 0.1, 0.05, 0.4]])
def test_mean_ci_is_the_student_t_interval(values: list[float]) -> None:
    m = MeanCI.of(values)
    assert m is not None and m.n == len(values)
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert m.mean == pytest.approx(np.mean(values), abs=1e-12)
    assert m.half_width == pytest.approx((hi - lo) / 2, rel=1e-12)


def test_mean_ci_of_one_value_has_no_interval() -> None:
    assert MeanCI.of([2.0]) == MeanCI(1, 2.0, None)
    assert MeanCI.of([]) is None


def test_report_aggregates_seeds_per_case_and_pairs_each_seed_with_its_baseline(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    run = Run("s", "r1", "abc", T0)
    base = {0: 3.0, 1: 2.0, 2: 2.5}
    cand = {0: 2.9, 1: 1.7, 2: 2.2}  # paired differences -0.1, -0.3, -0.3
    for seed in (0, 1, 2):
        trial(run, "baseline", rng=rng, seed=seed, eval_loss=base[seed], bayes_loss=1.0)
        trial(run, "fp16_compress", rng=rng, seed=seed, eval_loss=cand[seed], bayes_loss=1.0)
    run.write(tmp_path)
    data = ReportData.of(read_results([tmp_path]), read_comm([tmp_path]))
    assert len(data.current) == 6  # one row per (case, seed): no seed hides another
    rows = {r.strategy: r for r in aggregate(data)}
    assert rows["baseline"].seeds == (0, 1, 2) and rows["baseline"].vs_baseline is None
    f = rows["fp16_compress"]
    assert f.loss == MeanCI.of(list(cand.values()))
    assert f.gap == MeanCI.of([v - 1.0 for v in cand.values()])
    assert f.vs_baseline == MeanCI.of([cand[s] - base[s] for s in (0, 1, 2)])
    assert "`fp16_compress` | 3 | 2.27 ± " in markdown(aggregate(data))
    page = build_page(read_results([tmp_path]), read_comm([tmp_path]), "t")
    assert "seeds" in [s.id for s in page.sections]

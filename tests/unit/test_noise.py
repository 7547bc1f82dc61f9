"""The noise meter's verdict from its reference timings and the foreign load, against its thresholds."""

from __future__ import annotations

import json

import pytest

from bench.runner.noise import NOISY_CV, NOISY_FOREIGN_SHARE, NoiseMeter, describe


def _meter(timings: list[float], foreign: list[float], cores: int = 2) -> NoiseMeter:
    return NoiseMeter(cores=cores, timings_s=timings, foreign_cores=foreign, load_1m=[1.0])


def test_a_steady_reference_on_idle_cores_is_quiet() -> None:
    cols, reasons = _meter([0.100, 0.102, 0.098, 0.101], [0.02, 0.01]).columns()
    assert cols["noisy"] is False and cols["noise_ref_cv"] == pytest.approx(0.017036, rel=1e-4)  # std (ddof=1) / mean and reasons == {}
    assert describe({**cols, "cpu_cores": 2}).startswith("quiet: reference CV 1.7%")


def test_a_spread_reference_or_busy_cores_is_noisy() -> None:
    spread = [0.1, 0.1 * (1 + 3 * NOISY_CV)]  # CV = 3 * NOISY_CV / sqrt(2) / (1 + 1.5 NOISY_CV) > NOISY_CV
    assert _meter(spread, [0.0]).columns()[0]["noisy"] is True
    busy = [NOISY_FOREIGN_SHARE * 2 * 1.2]  # median foreign cores above the share of 2 cores
    cols, _ = _meter([0.1, 0.1], busy).columns()
    assert cols["noisy"] is True and describe({**cols, "cpu_cores": 2}).startswith("NOISY:")


def test_without_timings_the_columns_are_null_with_reasons() -> None:
    cols, reasons = NoiseMeter(cores=2, timings_s=[], foreign_cores=[], load_1m=[]).columns()
    assert cols["noisy"] is None and cols["noise_ref_cv"] is None
    assert set(reasons) == {"noise_ref_cv", "noise_foreign_cores", "load_avg_1m", "noisy"}
    assert json.dumps(reasons) and describe(cols) == "noise not measured"

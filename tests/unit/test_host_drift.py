"""The host-drift investigation's statistics against their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.investigations.host_drift import analyse, autocorr, launches_needed, window_cv


def test_window_cv_is_the_cv_of_window_medians() -> None:
    x = np.array([1.0, 3.0, 2.0, 10.0, 12.0, 11.0])  # window medians 2 and 11
    m = np.array([2.0, 11.0])
    assert window_cv(x, 3) == pytest.approx(m.std(ddof=1) / m.mean())
    with pytest.raises(ValueError):
        window_cv(x, 4)


def test_white_noise_shrinks_with_the_window_and_a_random_walk_does_not() -> None:
    rng = np.random.default_rng(0)
    white = np.exp(rng.normal(0, 0.1, 3000))
    walk = np.exp(np.cumsum(rng.normal(0, 0.02, 3000)))
    w, r = analyse(white), analyse(walk)
    assert w.window_cv[100] < w.window_cv[1] / 5  # ~1/sqrt(100) of it
    assert r.window_cv[100] > 0.9 * r.window_cv[1]  # a drift: longer windows barely help
    assert abs(w.autocorr[1]) < 0.05 and r.autocorr[30] > 0.8


def test_autocorr_of_an_alternating_series_is_minus_one_at_lag_one() -> None:
    x = np.exp(np.array([0.0, 1.0] * 50))
    assert autocorr(x, 1) == pytest.approx(-1.0) and autocorr(x, 2) == pytest.approx(1.0)


def test_launches_needed_follows_the_median_difference_formula() -> None:
    # 1.96 * sqrt(2) * sqrt(pi/2) * 0.10 / 0.05 = 6.95 -> n = 48.3 -> 49
    assert launches_needed(0.10, 0.05) == math.ceil((1.959964 * math.sqrt(2) * math.sqrt(math.pi / 2) * 2) ** 2) == 49
    assert launches_needed(0.01, 0.05) == 1

"""How fast this machine's own speed drifts: the floor under any step time's reproducibility.

    python -m bench.investigations.host_drift [--seconds 60] [--out drift.json]

Runs the sweep's noise reference (`bench.runner.noise.reference_once`: single-threaded
sorting, nothing of torch) back to back for `--seconds`, and reports:
- the coefficient of variation of window medians, for windows from one timing to a tenth
  of the run. White noise would shrink it by sqrt(window); drift that persists does not;
- the autocorrelation of the log timings at several lags: how long the machine's speed
  stays where it is, i.e. whether a reference timed beside a launch says anything about it;
- the launches per trial that two sweeps need for their medians to fall within `--goal`
  of each other 95% of the time, if each launch's measured window (`--launch-s`, 2 s: a
  default-suite train launch's 20 steps) varied like a window of the reference that long,
  and launches were independent (the median's standard error taken as 1.2533 sigma / sqrt(n)).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench.runner.noise import reference_data, reference_once

NORMAL_95 = 1.959964
MEDIAN_SE = math.sqrt(math.pi / 2)  # the sample median's standard error, in sigmas / sqrt(n), for normal data


@dataclass(frozen=True, slots=True)
class Drift:
    timings: int
    median_s: float
    window_cv: dict[int, float]  # window length (timings) -> CV of the window medians
    autocorr: dict[int, float]  # lag (timings) -> autocorrelation of log timings


def window_cv(x: np.ndarray, window: int) -> float:
    """CV (ddof=1) of the medians of consecutive, non-overlapping windows of `window` timings."""
    n = len(x) // window
    if n < 2:
        raise ValueError(f"{len(x)} timings hold fewer than two windows of {window}")
    medians = np.median(x[: n * window].reshape(n, window), axis=1)
    return float(medians.std(ddof=1) / medians.mean())


def autocorr(x: np.ndarray, lag: int) -> float:
    """Pearson correlation of log(x[t]) with log(x[t + lag])."""
    y = np.log(x)
    return float(np.corrcoef(y[:-lag], y[lag:])[0, 1])


def analyse(x: np.ndarray) -> Drift:
    windows = [w for w in (1, 3, 10, 30, 100) if len(x) // w >= 5]
    lags = [lag for lag in (1, 3, 10, 30, 100) if lag < len(x) // 4]
    return Drift(len(x), float(np.median(x)), {w: window_cv(x, w) for w in windows}, {lag: autocorr(x, lag) for lag in lags})


def launches_needed(launch_cv: float, goal: float) -> int:
    """Launches per trial for two sweeps' medians to differ by at most `goal` with 95% probability,
    launches independent with coefficient of variation `launch_cv`: the difference of two medians
    has standard error sqrt(2) * 1.2533 * cv / sqrt(n)."""
    return math.ceil((NORMAL_95 * math.sqrt(2) * MEDIAN_SE * launch_cv / goal) ** 2)


def measure(seconds: float) -> np.ndarray:
    data = reference_data()
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        out.append(reference_once(data))
    return np.asarray(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.investigations.host_drift", description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--goal", type=float, default=0.05, help="two sweeps' medians within this fraction (J's goal: 0.05)")
    ap.add_argument("--launch-s", type=float, default=2.0, help="seconds of steps one launch measures")
    ap.add_argument("--out", type=Path, help="also write the timings and the analysis as JSON")
    args = ap.parse_args(argv)
    x = measure(args.seconds)
    d = analyse(x)
    print(f"{d.timings} timings of the noise reference, median {d.median_s * 1e3:.1f} ms")
    for w, cv in d.window_cv.items():
        print(f"  window {w:>3} timings ({w * d.median_s:6.2f} s): CV of window medians {cv * 100:.1f}%")
    for lag, r in d.autocorr.items():
        print(f"  lag {lag:>3} timings ({lag * d.median_s:6.2f} s): autocorrelation {r:+.2f}")
    w = min(d.window_cv, key=lambda w: abs(w * d.median_s - args.launch_s))
    cv = d.window_cv[w]
    print(f"a {args.launch_s:g} s launch varies like a {w * d.median_s:.1f} s window (CV {cv * 100:.1f}%): two sweeps' "
          f"medians within {args.goal:.0%} at 95% need {launches_needed(cv, args.goal)} independent launches per trial")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps({"timings_s": x.tolist(), **asdict(d)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

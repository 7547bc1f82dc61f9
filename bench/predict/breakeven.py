"""Break-even bandwidth: below which a strategy's step beats the baseline's, measured and predicted.

Measured: where the two step-time curves cross, interpolated linearly in log-bandwidth between
the two links around the crossing (the highest crossing from slower to faster as the link slows).
Predicted: the same crossing of the two predicted curves over a fine log grid of rates, each
rate's link scaled from the calibration (`links.at_rate`); its interval comes from the range
of each strategy's compute over its calibration links.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

GRID = [10 ** (6 + k / 50) for k in range(301)]  # 1 Mbit/s .. 1 Tbit/s, 50 points a decade


def rate_text(bps: float) -> str:
    """`1 Gbit/s`, `200 Mbit/s`."""
    return f"{bps / 1e9:.3g} Gbit/s" if bps >= 1e9 else f"{bps / 1e6:.3g} Mbit/s"


def crossing(base: Sequence[tuple[float, float]], cand: Sequence[tuple[float, float]]) -> tuple[float | None, str | None]:
    """Bandwidth below which `cand` is faster than `base`, from (rate, step) points; (None, reason) without one.

    Only rates measured for both count. The crossing taken is the highest-bandwidth one where
    the candidate goes from slower (above) to faster (below).
    """
    b = dict(base)
    shared = sorted((r for r, _ in cand if r in b), reverse=True)
    if len(shared) < 2:
        return None, "fewer than two links measured for both it and the baseline"
    c = dict(cand)
    diff = [(r, c[r] - b[r]) for r in shared]  # > 0: slower than fp32
    if all(d < 0 for _, d in diff):
        return None, f"faster than fp32 on every measured link (up to {rate_text(shared[0])})"
    if all(d >= 0 for _, d in diff):
        return None, f"never faster than fp32 on the measured links (down to {rate_text(shared[-1])})"
    for (r1, d1), (r2, d2) in zip(diff, diff[1:]):
        if d1 >= 0 > d2:
            x1, x2 = math.log(r1), math.log(r2)
            return math.exp(x1 + (x2 - x1) * d1 / (d1 - d2)), None
    return None, "faster above and slower below: no crossing from slower to faster as the link slows"


def predicted_crossing(base: Callable[[float], float], cand: Callable[[float], float]) -> tuple[float | None, str | None]:
    """`crossing` of two predicted step-time curves (rate bit/s -> s) over `GRID`."""
    got, why = crossing([(r, base(r)) for r in GRID], [(r, cand(r)) for r in GRID])
    if why is not None:  # the "links" here are the grid's rates
        why = why.replace("on every measured link (up to 1e+03 Gbit/s)", "at every rate from 1 Mbit/s to 1 Tbit/s")
        why = why.replace("on the measured links (down to 1 Mbit/s)", "at any rate from 1 Mbit/s to 1 Tbit/s")
    return got, why


def within_factor(predicted: float, measured: float, factor: float = 1.5) -> bool:
    """Whether `predicted` lies within `factor` of `measured`, either way."""
    return measured / factor <= predicted <= measured * factor

"""Break-even bandwidth: below which a strategy's step beats the baseline's, measured and predicted.

Measured: where the two step-time curves cross, interpolated linearly in log-bandwidth between
the two links around the crossing (the highest crossing from slower to faster as the link slows).
Predicted: the same crossing of the two predicted curves over a fine log grid of rates, each
rate's link scaled from the calibration (`links.at_rate`); its interval comes from the range
of each strategy's compute over its calibration links.
Over rounds (`over_rounds`): where both trials ran several launches in the same rounds, each
round's per-link ratios (strategy / baseline p50) give that round's crossing; the break-even is
their median with its CI over rounds, **resolved** only when every round crosses and the CI lies
inside the measured links. The report's network section and `commbench predict` both use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from bench.compare.stats import Estimate, median_ci

GRID = [10 ** (6 + k / 50) for k in range(301)]  # 1 Mbit/s .. 1 Tbit/s, 50 points a decade


DASH = "–"


def rate_text(bps: float | None) -> str:
    """A bandwidth as tc would write it: `1 Gbit/s`, `200 Mbit/s`; a dash for none."""
    if bps is None:
        return DASH
    if bps >= 1e12:
        return f"{bps / 1e12:.3g} Tbit/s"
    return f"{bps / 1e9:.3g} Gbit/s" if bps >= 1e9 else f"{bps / 1e6:.3g} Mbit/s"


FASTER, NEVER, RISES = "faster everywhere", "never faster", "rises"  # why `fall_through` found no crossing


def fall_through(points: Sequence[tuple[float, float]]) -> tuple[float | None, str | None]:
    """The highest rate at which `v` falls from >= 0 to < 0 as the rate decreases, interpolated linearly
    in log-rate, from (rate, v) points; else (None, FASTER | NEVER | RISES)."""
    pts = sorted(points, reverse=True)
    if all(v < 0 for _, v in pts):
        return None, FASTER
    if all(v >= 0 for _, v in pts):
        return None, NEVER
    for (r1, d1), (r2, d2) in zip(pts, pts[1:]):
        if d1 >= 0 > d2:
            x1, x2 = math.log(r1), math.log(r2)
            return math.exp(x1 + (x2 - x1) * d1 / (d1 - d2)), None
    return None, RISES


def crossing(base: Sequence[tuple[float, float]], cand: Sequence[tuple[float, float]]) -> tuple[float | None, str | None]:
    """Bandwidth below which `cand` is faster than `base`, from (rate, step) points; (None, reason) without one.

    Only rates measured for both count. The crossing taken is the highest-bandwidth one where
    the candidate goes from slower (above) to faster (below): `fall_through` of their difference.
    """
    b = dict(base)
    shared = sorted((r for r, _ in cand if r in b), reverse=True)
    if len(shared) < 2:
        return None, "fewer than two links measured for both it and the baseline"
    c = dict(cand)
    got, why = fall_through([(r, c[r] - b[r]) for r in shared])  # > 0: slower than fp32
    reasons = {FASTER: f"faster than fp32 on every measured link (up to {rate_text(shared[0])})",
               NEVER: f"never faster than fp32 on the measured links (down to {rate_text(shared[-1])})",
               RISES: "faster above and slower below: no crossing from slower to faster as the link slows"}  # fmt: skip
    return got, reasons[why] if why else None


def predicted_crossing(base: Callable[[float], float], cand: Callable[[float], float]) -> tuple[float | None, str | None]:
    """Where two predicted step-time curves (rate bit/s -> s) cross over `GRID` (`fall_through` of their difference)."""
    got, why = fall_through([(r, cand(r) - base(r)) for r in GRID])
    reasons = {FASTER: "faster than fp32 at every rate from 1 Mbit/s to 1 Tbit/s",
               NEVER: "never faster than fp32 at any rate from 1 Mbit/s to 1 Tbit/s",
               RISES: "faster above and slower below: no crossing from slower to faster as the link slows"}  # fmt: skip
    return got, reasons[why] if why else None


def within_factor(predicted: float, measured: float, factor: float = 1.5) -> bool:
    """Whether `predicted` lies within `factor` of `measured`, either way."""
    return measured / factor <= predicted <= measured * factor


@dataclass(frozen=True, slots=True)
class RoundBreakEven:
    """The break-even bandwidth (bit/s) over rounds: the median of each round's crossing, with its CI."""

    estimate: Estimate | None  # None when no round crossed
    rounds: int  # rounds with both trials on two or more shared links
    crossed: int  # of them, rounds whose ratios cross 1
    resolved: bool
    reason: str  # why it is unresolved, or the range it lies in


def ratio_crossing(ratios: dict[float, float]) -> tuple[float | None, str | None]:
    """Bandwidth where the ratio (strategy / baseline step) falls through 1 as the link slows, interpolated
    linearly in log-ratio against log-bandwidth; (None, reason) without one."""
    if len(ratios) < 2:
        return None, "fewer than two links"
    got, why = fall_through([(r, math.log(v)) for r, v in ratios.items()])
    reasons = {FASTER: "faster on every link", NEVER: "never faster", RISES: "faster above and slower below"}
    return got, reasons[why] if why else None


def over_rounds(base: Mapping[tuple[str, int], Mapping[float, float]], cand: Mapping[tuple[str, int], Mapping[float, float]]) -> RoundBreakEven | None:
    """The break-even of `cand` against `base`, each (run, round) -> {link rate: that round's step p50},
    over their shared rounds; None when no round holds both on two or more links."""
    crossings, why = [], []
    for key in sorted(base.keys() & cand.keys()):
        shared = base[key].keys() & cand[key].keys()
        if len(shared) < 2:
            continue
        bps, reason = ratio_crossing({r: cand[key][r] / base[key][r] for r in shared})
        if bps is not None:
            crossings.append(bps)
        else:
            why.append(reason or "")
    rounds = len(crossings) + len(why)
    if not rounds:
        return None
    if not crossings:
        common = max(set(why), key=why.count)
        return RoundBreakEven(None, rounds, 0, False, f"no round crosses ({common} in {why.count(common)} of {rounds})")
    est = median_ci(crossings)
    links = sorted({r for pts in (*base.values(), *cand.values()) for r in pts})
    lo, hi = links[0], links[-1]
    if why:
        reason = f"{len(why)} of {rounds} rounds do not cross ({', '.join(sorted(set(why)))})"
    elif est.low is None:
        reason = est.reason or "no CI"
    elif not lo <= est.low <= est.high <= hi:  # type: ignore[operator]
        reason = f"CI reaches outside the measured links ({rate_text(lo)} to {rate_text(hi)})"
    else:
        reason = f"CI inside the measured links ({rate_text(lo)} to {rate_text(hi)})"
    resolved = not why and est.low is not None and lo <= est.low <= est.high <= hi  # type: ignore[operator]
    return RoundBreakEven(est, rounds, len(crossings), resolved, reason)


def round_text(rb: RoundBreakEven | None) -> str:
    """`312 Mbit/s [240 Mbit/s, 401 Mbit/s], 5 rounds, resolved` or why not."""
    if rb is None:
        return f"{DASH} (no shared rounds)"
    if rb.estimate is None:
        return f"unresolved: {rb.reason}"
    e = rb.estimate
    ci = f" [{rate_text(e.low)}, {rate_text(e.high)}]" if e.low is not None else ""
    return f"{rate_text(e.value)}{ci}, {rb.rounds} rounds, {'resolved' if rb.resolved else 'unresolved: ' + rb.reason}"

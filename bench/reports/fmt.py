"""How the report prints a value: units scaled for reading, and a dash for anything not measured."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

DASH = "–"  # not measured or not applicable: never printed as 0 or `nan`


def missing(value: Any) -> bool:
    """None, NaN, pd.NA or NaT: a value that was not measured."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists and arrays are values, not missing
        return False


def text(value: Any) -> str:
    """A label or a free-form value as text; missing is a dash (never `nan` or `None`)."""
    return DASH if missing(value) else str(value)


def ms(seconds: Any) -> str:
    return DASH if missing(seconds) else f"{float(seconds) * 1e3:.2f}"


def mb(nbytes: Any) -> str:
    return DASH if missing(nbytes) else f"{float(nbytes) / 1e6:.3f}"


def count(value: Any) -> str:
    return DASH if missing(value) else f"{float(value):,.0f}"


def num(value: Any, digits: int = 4) -> str:
    """A plain quantity (loss, ratio of a fraction) to `digits` significant figures."""
    return DASH if missing(value) else f"{float(value):.{digits}g}"


def ratio(value: Any) -> str:
    """`0.503×`; an undefined ratio (a zero or missing base) is a dash."""
    if missing(value) or not math.isfinite(float(value)):
        return DASH
    return f"{float(value):.3f}×"


def delta(value: Any) -> str:
    """A signed difference, `+0.0123` / `−0.0040`."""
    if missing(value):
        return DASH
    v = float(value)
    return f"{v:+.4g}".replace("-", "−")


def pct(value: Any) -> str:
    return DASH if missing(value) else f"{float(value) * 100:.1f}%"


def p_value(value: Any) -> str:
    return DASH if missing(value) else f"p={float(value):.2g}"


def sha(value: Any) -> str:
    """A commit as its first 10 hex digits."""
    return DASH if missing(value) else str(value)[:10]


def last_line(error: Any) -> str:
    """The last non-blank line of an error (a traceback's exception, a skip's reason); a dash if none."""
    lines = [s.strip() for s in str("" if missing(error) else error).strip().splitlines() if s.strip()]
    return lines[-1] if lines else DASH


def ci(low: Any, high: Any, show: Any = None) -> str:
    """`[0.98, 1.02]` with `show` for each end; a dash when there is no interval."""
    if missing(low) or missing(high):
        return DASH
    show = show or num
    return f"[{show(low)}, {show(high)}]"

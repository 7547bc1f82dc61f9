"""Per-metric thresholds parsed from strings, pytest-benchmark style: `latency_p50:5%`, `bytes:0%`, `mem:10%`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bench.compare.metrics import Metric, metric_names
from bench.errors import BenchError

SYNTAX = "METRIC:PCT% (e.g. latency_p50:5%)"


@dataclass(frozen=True, slots=True)
class Threshold:
    """The largest relative change of `metric` (a metric name, its column or its group) that is not a verdict."""

    metric: str
    rel: float  # 0.05 for "5%"

    def __post_init__(self) -> None:
        if not math.isfinite(self.rel) or self.rel < 0:
            raise ValueError(f"threshold for {self.metric} must be a finite percentage >= 0, got {self.rel!r}")

    def covers(self, metric: Metric) -> bool:
        return self.metric in (metric.name, metric.column, metric.group)

    def names_exactly(self, metric: Metric) -> bool:
        """True when written for this metric itself rather than its group (the more specific wins)."""
        return self.metric in (metric.name, metric.column)


def parse_threshold(text: str) -> Threshold:
    """`"latency_p50:5%"` -> Threshold("latency_p50", 0.05); anything else is a BenchError naming the string."""
    name, colon, pct = (part.strip() for part in text.partition(":"))
    if not colon or not name or not pct.endswith("%"):
        raise BenchError(f"threshold {text!r}: expected {SYNTAX}")
    known = metric_names()
    if name not in known:
        raise BenchError(f"threshold {text!r}: unknown metric {name!r}; known: {', '.join(known)}")
    try:
        value = float(pct.removesuffix("%"))
    except ValueError:
        raise BenchError(f"threshold {text!r}: {pct!r} is not a percentage; expected {SYNTAX}") from None
    try:
        return Threshold(name, value / 100.0)
    except ValueError as exc:
        raise BenchError(f"threshold {text!r}: {exc}") from None


def parse_thresholds(texts: Iterable[str]) -> tuple[Threshold, ...]:
    """Parse every string; all bad ones are reported in one error."""
    parsed: list[Threshold] = []
    errors: list[str] = []
    for text in texts:
        try:
            parsed.append(parse_threshold(text))
        except BenchError as exc:
            errors.append(str(exc))
    if errors:
        raise BenchError("; ".join(errors))
    return tuple(parsed)


def threshold_for(metric: Metric, thresholds: Sequence[Threshold]) -> float:
    """The relative threshold that applies to `metric`: its own, else its group's, else its default (last given wins)."""
    own = [t for t in thresholds if t.names_exactly(metric)]
    group = [t for t in thresholds if t.covers(metric) and not t.names_exactly(metric)]
    chosen = own or group
    return chosen[-1].rel if chosen else metric.default_rel

"""The metrics the comparator checks: their column, whether they are exact or noisy, their default threshold."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd

from bench.storage.schema import TRIAL_COLUMNS


class Kind(StrEnum):
    """How a metric's values are compared."""

    EXACT = "exact"  # deterministic: any change past the threshold (default 0%) is a verdict
    SAMPLES = "samples"  # a list column of raw samples per row: Mann-Whitney U + threshold on the median
    SCALAR = "scalar"  # one noisy value per row: the same test across rows, threshold alone for one row a side


@dataclass(frozen=True, slots=True)
class Metric:
    """One compared quantity. Every metric here is better when lower."""

    name: str  # as written in a threshold and printed in verdicts
    column: str  # the trials-table column it is read from
    kind: Kind
    group: str  # a threshold shorthand that covers several metrics (`bytes:0%`)
    default_rel: float  # threshold on the relative change when none is given
    unit: str
    # The column of per-launch values (one per launch of the trial's ranks): when set, the verdict is
    # over launches (bench.compare.stats.launch_verdict), not over the raw samples of `column`.
    launches: str | None = None


_UNITS = {c.name: c.unit for c in TRIAL_COLUMNS}
_EXACT_COLUMNS = (
    "comm_logical_bytes_per_step",
    "analytic_logical_bytes_per_step_per_rank",
    "comm_calls_per_step",
    "model_params",
    "model_bytes",
    "model_sparse_bytes",
    "transfer_payload_bytes",
)

METRICS: tuple[Metric, ...] = (
    # The median of the raw step times is what the threshold applies to, hence "p50".
    Metric("latency_p50", "latency_samples_s", Kind.SAMPLES, "latency", 0.10, _UNITS["latency_samples_s"],
           launches="latency_p50_s_per_launch"),
    Metric("mem_rss_peak", "mem_rss_peak_bytes_max", Kind.SCALAR, "mem", 0.10, _UNITS["mem_rss_peak_bytes_max"]),
    *(Metric(c, c, Kind.EXACT, "bytes", 0.0, _UNITS[c]) for c in _EXACT_COLUMNS),
)


def metric(name: str) -> Metric:
    """The metric called `name` (as in METRICS)."""
    for m in METRICS:
        if m.name == name:
            return m
    raise KeyError(f"no metric {name!r}; known: {', '.join(m.name for m in METRICS)}")


def metric_names() -> list[str]:
    """Every name a threshold may use: metric names, their columns and their groups."""
    names = {n for m in METRICS for n in (m.name, m.column, m.group)}
    return sorted(names)


def values(metric: Metric, rows: pd.DataFrame) -> np.ndarray:
    """The metric's non-null values over `rows` (samples pooled for a list column), as float64."""
    if metric.column not in rows:
        return np.empty(0)
    column = rows[metric.column]
    if metric.kind is Kind.SAMPLES:
        lists = [np.asarray(v, dtype=np.float64) for v in column if v is not None and not _is_na(v)]
        flat = np.concatenate(lists) if lists else np.empty(0)
    else:
        flat = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return flat[~np.isnan(flat)]


def launch_values(metric: Metric, rows: pd.DataFrame) -> np.ndarray:
    """One value per launch over `rows`: each row's per-launch list, or for a row without one (written
    before launches were recorded, or by a single run_trial) the median of its samples: one launch."""
    out: list[float] = []
    for i in range(len(rows)):
        per = rows[metric.launches].iloc[i] if metric.launches in rows else None
        if per is not None and not _is_na(per) and len(per):
            out.extend(float(v) for v in per)
            continue
        samples = rows[metric.column].iloc[i] if metric.column in rows else None
        if samples is not None and not _is_na(samples) and len(samples):
            out.append(float(np.median(np.asarray(samples, dtype=np.float64))))
    return np.asarray(out, dtype=np.float64)


def representative(metric: Metric, rows: pd.DataFrame) -> float | None:
    """One value per side: the median over rows (one row: its value); None when every row is null."""
    found = values(metric, rows)
    return float(np.median(found)) if found.size else None


def fmt_value(value: float | None) -> str:
    """A value for the summaries: whole counts in full (so one extra byte shows), others to 4 digits."""
    if value is None:
        return "null"
    return f"{value:.10g}" if float(value).is_integer() else f"{value:.4g}"


def fmt_change(rel: float | None) -> str:
    """` (+12.1%)`, or nothing when the relative change is undefined."""
    return "" if rel is None else f" ({rel * 100:+.3g}%)"


def _is_na(value: object) -> bool:
    # A list cell is an array (never NA); a missing one is None or NaN.
    return isinstance(value, float) and np.isnan(value)

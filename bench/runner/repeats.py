"""Several launches of one trial: when to stop launching, and the one row they make.

A launch is one whole run of the trial's ranks (`run_trial`), and the launches of a trial are
its statistical unit: between sweeps, a trial's step p50 moves mostly from launch to launch
(where the ranks' memory and threads landed, what else ran), not from step to step. So:

- `Repeats` decides after each launch whether to launch again: `repeats = N` launches N times;
  `repeats = "auto"` launches until the CI over launches of the step p50 is within
  ±`repeat_target` of it (`stop = "target"`), or until `repeat_max` launches (`"max launches"`)
  or `repeat_max_s` seconds of this trial's launches (`"max seconds"`, once it has the 3 launches
  a CI needs), whichever comes first.
- `combine` makes the trial's row: the first launch's row (every column that does not vary
  between launches), with the timing columns replaced: `CI_METRICS` by their median over
  launches with a CI and the per-launch values; p90/p99/mean/std, step parts and phases by
  their median over launches; the raw step samples of every launch concatenated; wall and
  launcher CPU time summed. A trial with a failed or skipped launch is that launch's row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.compare.stats import median_ci
from bench.contracts import AUTO, MIN_AUTO_LAUNCHES, TrialConfig
from bench.storage import schema

# Time figures that get a CI over launches: each as `<col>`, `<col>_ci_low`, `<col>_ci_high`, `<col>_per_launch`.
CI_METRICS = tuple(col for col, _unit in schema.CI_METRICS)
# Per-launch timings summarised by their median over launches.
MEDIAN_OVER_LAUNCHES = (
    "latency_p90_s", "latency_p99_s", "latency_mean_s", "latency_std_s", "gen_tokens_per_s",
    "transfer_encode_p50_s", "transfer_broadcast_p50_s", "transfer_decode_p50_s", "comm_overlap_fraction",
)  # fmt: skip
CONCATENATED = ("latency_samples_s", "latency_spread_s")
SUMMED = ("trial_wall_s", "launcher_cpu_s")
UNFINISHED = "unfinished"


@dataclass
class Repeats:
    """The stopping rule of one trial, fed each launch's step p50 and wall time."""

    repeats: int | str
    target: float
    max_launches: int
    max_s: float | None
    p50s: list[float] = field(default_factory=list)
    launches: int = 0
    elapsed_s: float = 0.0
    stop: str | None = None

    @classmethod
    def of(cls, cfg: TrialConfig) -> Repeats:
        return cls(cfg.repeats, cfg.repeat_target, cfg.repeat_max, cfg.repeat_max_s)

    @property
    def auto(self) -> bool:
        return self.repeats == AUTO

    def add(self, p50: float | None, seconds: float) -> str | None:
        """Record one ok launch; return why to stop launching (and keep it in `stop`), or None to go on."""
        self.launches += 1
        if p50 is not None:
            self.p50s.append(p50)
        self.elapsed_s += seconds
        self.stop = self._decide()
        return self.stop

    def _decide(self) -> str | None:
        if not self.auto:
            return "fixed" if self.launches >= int(self.repeats) else None
        if self.met():
            return "target"
        if self.launches >= self.max_launches:
            return "max launches"
        # The seconds cap waits for the launches a CI needs: stopping earlier would leave no CI at all.
        if self.max_s is not None and self.elapsed_s >= self.max_s and self.launches >= MIN_AUTO_LAUNCHES:
            return "max seconds"
        return None

    def met(self) -> bool:
        width = median_ci(self.p50s).half_width
        return width is not None and width <= self.target

    def target_met(self) -> bool | None:
        """Whether the CI reached the target; None for a fixed repeat count (there is no target)."""
        return self.met() if self.auto else None


@dataclass(frozen=True, slots=True)
class Launch:
    """One launch's (row, per-collective rows) and the round it ran in."""

    row: dict[str, Any]
    comm: list[dict[str, Any]]
    round: int


def combine(
    launches: Sequence[Launch], rule: Repeats, round_seed: int | None, log_dir: str | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The trial's row (and per-collective rows, the first launch's) from its launches so far."""
    last = launches[-1].row
    info = _repeat_columns(launches, rule, round_seed)
    if last["status"] != "ok":  # a failed or skipped launch is the trial's outcome
        return {**last, **info, "repeat_stop": "failed" if last["status"] == "failed" else "skipped"}, []
    rows = [lch.row for lch in launches]
    row = dict(rows[0])
    reasons = json.loads(row.get("null_reasons") or "{}")
    for col in CI_METRICS:
        row.update(_ci_columns(col, [r.get(col) for r in rows], reasons))
    for col in MEDIAN_OVER_LAUNCHES:
        values = [r.get(col) for r in rows]
        if all(v is not None for v in values):
            row[col] = float(np.median(values))
    for col in CONCATENATED:
        if all(r.get(col) is not None for r in rows):
            row[col] = [float(x) for r in rows for x in r[col]]
    for col in SUMMED:
        if all(r.get(col) is not None for r in rows):
            row[col] = float(sum(r[col] for r in rows))
    for col in (c for c in row if c.startswith("phase_") and c.endswith("_s")):
        values = [r.get(col) for r in rows]
        row[col] = float(np.median(values)) if all(v is not None for v in values) else row[col]
    if log_dir is not None and len(rows) > 1:
        row["log_dir"] = log_dir
    row.update(info)
    if info["ci_level"] is None:
        reasons["ci_level"] = median_ci(rule.p50s).reason or "no launch-level CI"
    row["null_reasons"] = json.dumps(reasons)
    return row, launches[0].comm


def _ci_columns(col: str, values: list[float | None], reasons: dict[str, str]) -> dict[str, Any]:
    if any(v is None for v in values):  # not measured for this workload: its reason is already set
        return {}
    est = median_ci([float(v) for v in values])  # type: ignore[arg-type]
    out = {col: est.value, f"{col}_ci_low": est.low, f"{col}_ci_high": est.high, f"{col}_per_launch": [float(v) for v in values]}  # type: ignore[arg-type]
    if est.reason:
        reasons[f"{col}_ci_low"] = reasons[f"{col}_ci_high"] = est.reason
    return out


def _repeat_columns(launches: Sequence[Launch], rule: Repeats, round_seed: int | None) -> dict[str, Any]:
    est = median_ci(rule.p50s)
    return {
        "launches": len(launches),
        "launch_rounds": [lch.round for lch in launches],
        "ci_level": est.level,
        "repeats": str(rule.repeats),
        "repeat_target_met": rule.target_met() if rule.stop is not None else None,
        "repeat_stop": rule.stop or UNFINISHED,
        "round_seed": round_seed,
    }

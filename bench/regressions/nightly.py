"""A nightly regression check: run a suite into a results history, compare with the last good run, report.

Every run is appended to `HISTORY/SUITE/` (a new run id, never overwriting), so the history grows
night after night and `commbench compare --history` / the report's history view can find
persistent steps. The new run is compared with the *last good run*: the latest earlier run whose
own nightly check passed (a run without a verdict file counts as good when none of its trials
failed). A regression therefore keeps failing the nightly until it is fixed or accepted
(`--accept` records the run as good), instead of silently becoming the next baseline.

The verdict is written beside the run (`RUN_ID.nightly.json`), the report to `OUT/index.html` and a
machine-readable summary to `OUT/summary.json`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.compare.history import History, history, run_order
from bench.compare.regression import DEFAULT_ALPHA, Comparison, compare, finding_line
from bench.compare.thresholds import Threshold
from bench.config import to_dict
from bench.errors import BenchError
from bench.reports.html import write_report
from bench.storage.parquet import read_results

VERDICT_SUFFIX = ".nightly.json"


@dataclass(frozen=True, slots=True)
class NightlyVerdict:
    """The outcome of one nightly run; also what `summary.json` and the verdict file hold."""

    suite: str
    run_id: str
    git_sha: str | None
    baseline_run_id: str | None  # the last good run it was compared with; None for the first run
    counts: dict[str, int]  # trials by status
    passed: bool  # no failed trial and no regression (or accepted)
    accepted: bool
    regressions: tuple[str, ...]  # one line each, as `commbench compare` prints them
    comparison: Comparison | None
    history: History
    report: str  # the HTML report's path ("" when none was written)

    def summary(self) -> str:
        head = (f"nightly {self.suite}: run {self.run_id} ({self.git_sha or 'no sha'}) "
                f"{'PASSED' if self.passed else 'FAILED'}{' (accepted)' if self.accepted else ''}; "
                f"{', '.join(f'{n} {s}' for s, n in sorted(self.counts.items()))}")  # fmt: skip
        against = f"compared with run {self.baseline_run_id}" if self.baseline_run_id else "no earlier good run: nothing to compare"
        lines = [head, against]
        if self.comparison is not None:
            lines.append(self.comparison.summary())
        lines += [self.history.summary(), *([f"report: {self.report}"] if self.report else [])]
        return "\n".join(lines)


def verdict_path(history_dir: Path, run_id: str) -> Path:
    return history_dir / f"{run_id}{VERDICT_SUFFIX}"


def last_good_run(history_dir: Path, df: pd.DataFrame, before: str) -> str | None:
    """The latest run started before `before` whose nightly passed (or, without a verdict file, had no failure)."""
    order = run_order(df)
    if before not in order:
        raise BenchError(f"run {before} is not in {history_dir}")
    for run_id in reversed(order[: order.index(before)]):
        stored = verdict_path(history_dir, run_id)
        if stored.exists():
            if json.loads(stored.read_text()).get("passed"):
                return run_id
        elif not (df.loc[df["run_id"] == run_id, "status"] == "failed").any():
            return run_id
    return None


def judge_run(
    history_dir: Path,
    run_id: str,
    out_dir: Path,
    thresholds: Sequence[Threshold] = (),
    *,
    alpha: float = DEFAULT_ALPHA,
    accept: bool = False,
    report: bool = True,
) -> NightlyVerdict:
    """Compare run `run_id` of `history_dir` with the last good run before it; write its verdict, report and summary.

    `report=False` skips the HTML report (the verdict and summary are still written).
    """
    df = read_results([history_dir])
    new = df[df["run_id"] == run_id]
    if new.empty:
        raise BenchError(f"no rows of run {run_id} under {history_dir}")
    base_id = last_good_run(history_dir, df, run_id)
    comparison = compare(df[df["run_id"] == base_id], new, thresholds, alpha=alpha) if base_id else None
    failed = int((new["status"] == "failed").sum())
    regressions = comparison.regressions() if comparison else ()
    title = f"commbench nightly: {new['suite'].iloc[0]}"
    page = write_report([history_dir], out_dir / "index.html", title, thresholds, alpha) if report else None
    shas = [s for s in new.get("git_sha", pd.Series(dtype=object)) if isinstance(s, str)]
    verdict = NightlyVerdict(
        suite=str(new["suite"].iloc[0]), run_id=run_id, git_sha=shas[0] if shas else None, baseline_run_id=base_id,
        counts={str(k): int(v) for k, v in new["status"].value_counts().items()},
        passed=accept or (failed == 0 and not regressions), accepted=accept and (failed > 0 or bool(regressions)),
        regressions=tuple(finding_line(f) for f in regressions),
        comparison=comparison, history=history(df, thresholds), report=str(page or ""),
    )  # fmt: skip
    _write_json(verdict_path(history_dir, run_id), _verdict_record(verdict))
    _write_json(out_dir / "summary.json", to_dict(verdict))
    return verdict


def _verdict_record(v: NightlyVerdict) -> dict[str, Any]:
    """What later nightlies read to find the last good run: small, without the full comparison."""
    return {"run_id": v.run_id, "git_sha": v.git_sha, "passed": v.passed, "accepted": v.accepted,
            "baseline_run_id": v.baseline_run_id, "counts": v.counts, "regressions": list(v.regressions)}  # fmt: skip


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")


def run_nightly(
    suite_name: str,
    history_root: Path,
    out_dir: Path,
    thresholds: Sequence[Threshold] = (),
    *,
    alpha: float = DEFAULT_ALPHA,
    accept: bool = False,
    progress: bool = True,
) -> NightlyVerdict:
    """Run the suite (every trial, as a new run of the history), then judge it."""
    from bench.runner import suite as suites
    from bench.runner.sweep import run_sweep

    suite = suites.load(suite_name)
    outcome = run_sweep(suite, history_root, force=True, progress=progress)
    if outcome.results_path is None:
        raise BenchError(f"suite {suite.name} has no trials")
    return judge_run(history_root / suite.name, outcome.run_id, out_dir, thresholds, alpha=alpha, accept=accept)

"""Are two sweeps' rows the same? Pairs trial rows by `trial_id` and compares their deterministic columns.

    python -m bench.benchmarks.same_rows BASE_RESULTS_DIR CAND_RESULTS_DIR [--ignore COL ...] [--paired-only]

Each row is reduced to `schema.deterministic_view` (no run-varying column, no timing in its
`metrics` JSON); the code revision (`git_sha`, `git_dirty`) is what such a comparison varies,
so it is ignored too. Prints one line per pair, `identical` or `different` with the columns
(and `metrics` keys) that differ, and exits 1 on any difference or on a trial found on one
side only (unless `--paired-only`). Where a directory holds several rows of one trial, the
latest (by `started_at`) is compared.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.storage.parquet import read_results
from bench.storage.schema import deterministic_view

CODE_REVISION = ("git_sha", "git_dirty")


def plain(value: Any) -> Any:
    """A parquet cell as a plain Python value: arrays as lists, numpy scalars as Python's, NaN and NA as None."""
    if isinstance(value, np.ndarray | list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def latest_rows(df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """trial_id -> its latest row, as plain values."""
    if "started_at" in df:
        df = df.sort_values("started_at", kind="stable")
    return {str(r["trial_id"]): {k: plain(v) for k, v in r.items()} for r in df.to_dict("records")}


def differences(base: dict[str, Any], cand: dict[str, Any], ignore: Sequence[str] = CODE_REVISION) -> list[str]:
    """The deterministic columns (`metrics.KEY` inside the metrics JSON) whose values differ."""
    b, c = deterministic_view(base), deterministic_view(cand)
    out = []
    for col in sorted((set(b) | set(c)) - set(ignore)):
        bv, cv = plain(b.get(col)), plain(c.get(col))
        if bv == cv:
            continue
        if col == "metrics" and isinstance(bv, dict) and isinstance(cv, dict):
            out += [f"metrics.{k}" for k in sorted(set(bv) | set(cv)) if bv.get(k, "<absent>") != cv.get(k, "<absent>")]
        else:
            out.append(col)
    return out


def compare(base: dict[str, dict[str, Any]], cand: dict[str, dict[str, Any]], ignore: Sequence[str], paired_only: bool) -> tuple[list[str], bool]:
    """Report lines, and whether every pair is identical (and, unless `paired_only`, every trial paired)."""
    lines, same = [], True
    for trial in sorted(set(base) | set(cand)):
        b, c = base.get(trial), cand.get(trial)
        if b is None or c is None:
            lines.append(f"{trial}  only in {'candidate' if b is None else 'base'}")
            same = same and paired_only
            continue
        label = f"{trial}  {b.get('strategy')} | {b.get('model')} | {b.get('workload')} | ws={b.get('world_size')}"
        diff = differences(b, c, ignore)
        lines.append(f"{label}  {'identical' if not diff else 'different: ' + ', '.join(diff)}")
        same = same and not diff
    return lines, same


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.benchmarks.same_rows", description=__doc__.splitlines()[0])
    ap.add_argument("base", type=Path)
    ap.add_argument("candidate", type=Path)
    ap.add_argument("--ignore", action="append", default=[], help="a further column to leave out (repeatable)")
    ap.add_argument("--paired-only", action="store_true", help="a trial on one side only is reported, not a failure")
    args = ap.parse_args(argv)
    base, cand = latest_rows(read_results([args.base])), latest_rows(read_results([args.candidate]))
    lines, same = compare(base, cand, (*CODE_REVISION, *args.ignore), args.paired_only)
    print("\n".join(lines))
    print(json.dumps({"pairs": len(set(base) & set(cand)), "base": len(base), "candidate": len(cand), "same": same}))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

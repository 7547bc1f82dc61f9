"""Atomic parquet writes per run, and reading a results directory back (with resume support)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench.errors import BenchError
from bench.storage.schema import COMM_SCHEMA, SCHEMA_VERSION, TRIAL_SCHEMA

COMM_SUFFIX = ".comm.parquet"


def _atomic_write(table: pa.Table, path: Path) -> None:
    """Write to a temp file in the same directory, then rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class RunWriter:
    """Accumulates one run's rows and rewrites its two files after every trial."""

    def __init__(self, results_dir: Path, run_id: str) -> None:
        self.trials_path = results_dir / f"{run_id}.parquet"
        self.comm_path = results_dir / f"{run_id}{COMM_SUFFIX}"
        self.rows: list[dict[str, Any]] = []
        self.comm_rows: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any], comm_rows: list[dict[str, Any]]) -> None:
        self._write([*self.rows, row], [*self.comm_rows, *comm_rows])

    def put(self, row: dict[str, Any], comm_rows: list[dict[str, Any]]) -> None:
        """Add `row`, replacing an earlier row of the same trial and its per-collective rows
        (a trial of several launches is rewritten after each one)."""
        tid = row["trial_id"]
        self._write([*(r for r in self.rows if r["trial_id"] != tid), row],
                    [*(c for c in self.comm_rows if c["trial_id"] != tid), *comm_rows])  # fmt: skip

    def update_all(self, columns: dict[str, Any], reasons: dict[str, str]) -> None:
        """Set `columns` on every row (values of the whole run, e.g. its noise), and add `reasons`
        to each row's null_reasons."""
        if not self.rows:
            return
        rows = []
        for r in self.rows:
            merged = {**json.loads(r.get("null_reasons") or "{}"), **reasons}
            rows.append({**r, **columns, "null_reasons": json.dumps(merged)})
        self._write(rows, self.comm_rows)

    def _write(self, rows: list[dict[str, Any]], comm: list[dict[str, Any]]) -> None:
        # Arrow silently drops keys that are not in the schema: a misspelt column would
        # vanish without a trace, so reject it here.
        for r, schema in [*((r, TRIAL_SCHEMA) for r in rows[-1:]), *((c, COMM_SCHEMA) for c in comm)]:
            extra = set(r) - set(schema.names)
            if extra:
                raise ValueError(f"columns not in the results schema: {sorted(extra)}")
        trials_table = pa.Table.from_pylist(rows, schema=TRIAL_SCHEMA)  # raises on a bad value
        comm_table = pa.Table.from_pylist(comm, schema=COMM_SCHEMA)
        _atomic_write(comm_table, self.comm_path)
        _atomic_write(trials_table, self.trials_path)  # last: a trial row implies its comm rows
        self.rows, self.comm_rows = rows, comm


def trial_files(paths: list[Path]) -> list[Path]:
    """Expand directories to the trial parquet files inside them (recursively)."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*.parquet") if not f.name.endswith(COMM_SUFFIX)))
        elif p.exists():
            files.append(p)
        else:
            raise BenchError(f"no such results file or directory: {p}")
    return files


def read_table(path: Path) -> pd.DataFrame:
    """One results file as a DataFrame; a corrupt or foreign file is a BenchError naming it."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise BenchError(f"corrupt results file {path}: {exc}") from None
    meta = table.schema.metadata or {}
    version = meta.get(b"commbench_schema_version")
    if version is None:
        raise BenchError(f"{path} is not a commbench results file (no schema version)")
    if int(version) > SCHEMA_VERSION:
        raise BenchError(f"{path} has schema version {int(version)}; this commbench reads up to {SCHEMA_VERSION}")
    return table.to_pandas()


def read_results(paths: list[Path]) -> pd.DataFrame:
    """All trial rows under `paths` (files or directories), concatenated."""
    files = trial_files(paths)
    if not files:
        return pd.DataFrame(columns=TRIAL_SCHEMA.names)
    return pd.concat([read_table(f) for f in files], ignore_index=True)


def read_comm(paths: list[Path]) -> pd.DataFrame:
    """The per-collective tables beside the given trial files."""
    frames = []
    for f in trial_files(paths):
        comm = f.with_name(f.name.removesuffix(".parquet") + COMM_SUFFIX)
        if comm.exists():
            frames.append(read_table(comm))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COMM_SCHEMA.names)


def launches_by_round(row: Any, column: str = "latency_p50_s_per_launch") -> dict[int, float]:
    """round -> that round's value of a stored row's per-launch column (empty without per-launch rounds)."""
    values, rounds = row.get(column), row.get("launch_rounds")
    if values is None or rounds is None or isinstance(values, float) or isinstance(rounds, float) or len(values) != len(rounds):
        return {}  # not stored (None) or a NaN from pandas
    return {int(r): float(v) for r, v in zip(rounds, values)}


def completed_trials(results_dir: Path, measurement_version: int) -> dict[str, int]:
    """Trial id -> the newest measurement version it was recorded ok with, under `results_dir`,
    for versions up to `measurement_version` (rows written before versions were stored count as 0)."""
    if not results_dir.exists():
        return {}
    df = read_results([results_dir])
    if df.empty:
        return {}
    ok = df[df["status"] == "ok"]
    if "repeat_stop" in ok:  # a trial a killed sweep left mid-repeats is run again
        ok = ok[ok["repeat_stop"] != "unfinished"]
    versions = ok["measurement_version"].fillna(0) if "measurement_version" in ok else pd.Series(0, index=ok.index)
    ok = ok.assign(_v=versions.astype(int))
    ok = ok[ok["_v"] <= measurement_version]
    return {str(k): int(v) for k, v in ok.groupby("trial_id")["_v"].max().items()}

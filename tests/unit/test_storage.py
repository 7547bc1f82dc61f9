"""Parquet storage: schema round trip, atomic rewrite, corrupt and foreign files, resume set."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.errors import BenchError
from bench.storage import parquet
from bench.storage.schema import COMM_COLUMNS, TRIAL_COLUMNS, TRIAL_SCHEMA, markdown
from bench.system import now_utc


def row(trial_id: str, status: str = "ok") -> dict[str, object]:
    return {
        "schema_version": 1, "run_id": "r1", "trial_id": trial_id, "suite": "s", "strategy": "baseline",
        "status": status, "latency_samples_s": [0.1, 0.2], "mem_rss_peak_bytes_per_rank": [1, 2],
        "started_at": now_utc(), "config": json.dumps({"a": 1}),
    }  # fmt: skip


def test_round_trip_keeps_types_and_lists(tmp_path: Path) -> None:
    w = parquet.RunWriter(tmp_path, "r1")
    w.add(row("a"), [{"run_id": "r1", "trial_id": "a", "rank": 0, "op": "all_reduce", "msg_bytes": 8}])
    w.add(row("b", "failed"), [])
    df = parquet.read_results([tmp_path])
    assert list(df["trial_id"]) == ["a", "b"]
    assert list(df.loc[0, "latency_samples_s"]) == [0.1, 0.2]
    assert set(df.columns) == set(TRIAL_SCHEMA.names)
    assert parquet.read_comm([tmp_path])["msg_bytes"].tolist() == [8]
    assert parquet.completed_trials(tmp_path, 2) == {"a": 0}  # written without a measurement version


def test_unknown_columns_and_wrong_types_are_rejected_at_write(tmp_path: Path) -> None:
    w = parquet.RunWriter(tmp_path, "r")
    with pytest.raises(ValueError, match="not in the results schema"):
        w.add({**row("a"), "latencyp50": 1.0}, [])
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        w.add({**row("b"), "latency_p50_s": "fast"}, [])


def test_corrupt_file_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "r.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(BenchError, match=r"corrupt results file .*r\.parquet"):
        parquet.read_results([tmp_path])
    assert bad.read_bytes() == b"PAR1 this is not parquet"  # never overwritten


def test_foreign_and_newer_files_are_refused(tmp_path: Path) -> None:
    pq.write_table(pa.table({"x": [1]}), tmp_path / "foreign.parquet")
    with pytest.raises(BenchError, match="not a commbench results file"):
        parquet.read_results([tmp_path / "foreign.parquet"])
    schema = TRIAL_SCHEMA.with_metadata({b"commbench_schema_version": b"99"})
    pq.write_table(pa.Table.from_pylist([row("a")], schema=schema), tmp_path / "new.parquet")
    with pytest.raises(BenchError, match="schema version 99"):
        parquet.read_results([tmp_path / "new.parquet"])


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="no such results"):
        parquet.read_results([tmp_path / "nope"])


def test_schema_page_documents_every_column() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "schema.md").read_text()
    assert markdown(TRIAL_COLUMNS) in page, "docs/schema.md's tables are stale: python -m bench.storage.schema"
    assert markdown(COMM_COLUMNS) in page, "docs/schema.md's tables are stale: python -m bench.storage.schema"


def test_strategies_page_table_is_current() -> None:
    from bench.strategies.catalog import markdown as strategies_markdown

    page = (Path(__file__).resolve().parents[2] / "docs" / "strategies.md").read_text()
    assert strategies_markdown() in page, "docs/strategies.md's table is stale: commbench list strategies --markdown"


def test_the_columns_import_no_pyarrow_and_name_the_types_pyarrow_builds() -> None:
    """A rank checks its metric declarations against the columns; pyarrow must not come with them."""
    import subprocess
    import sys

    code = "import sys, bench.storage.schema as s; s.TRIAL_COLUMNS; print('pyarrow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
    assert [str(f.type) for f in TRIAL_SCHEMA] == [c.type for c in TRIAL_COLUMNS]

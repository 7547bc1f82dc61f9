"""What a result row measured, as the report groups it: its case, its baseline's key, its label, the latest rows.

A row's *case* is every field that defines what it measured except the strategy: the whole
resolved config (options, lr, data, sizes, world size, ...) and the software/hardware
context. A strategy is compared with the `baseline` row of the same case and seed **in the
same run**: rows of different runs are never paired, since launches of one machine differ by
up to ~15%. The seed is not part of the history key (a case's seeds are repeats of it), but
it is part of a trial: `latest` keeps the latest row of every (case, seed).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.compare.trials import CONTEXT_COLUMNS, key_fields
from bench.config import canonical_json
from bench.reports import fmt

BASELINE = "baseline"
# Columns that name the case even when a row's stored config is partial (e.g. hand-written fixtures).
IDENTITY_COLUMNS = ("model", "workload", "device", "world_size", "batch_size", "seq_len", "steps")
# How a varying case field is written in a label.
_SHORT = {"world_size": "ws", "batch_size": "batch", "seq_len": "seq", "warmup_steps": "warmup"}


def case_fields(row: pd.Series) -> dict[str, Any]:
    """Every field of what `row` measured except its strategy, as dotted names, and its seed."""
    fields = {c: _plain(row.get(c)) for c in IDENTITY_COLUMNS if c in row.index}
    fields.update(key_fields(row))
    fields.pop("strategy", None)
    seed = row_seed(row)
    if seed is not None:
        fields["seed"] = seed
    return fields


def row_seed(row: pd.Series) -> int | None:
    """The row's trial seed: its `seed` column, else its stored config's (rows of schema 2), else None."""
    value = row.get("seed")
    if not fmt.missing(value):
        return int(value)
    raw = row.get("config")
    try:
        config = json.loads(raw) if isinstance(raw, str) else {}
    except json.JSONDecodeError:
        return None
    seed = config.get("seed")
    return int(seed) if isinstance(seed, int) else None


def pair_key(row: pd.Series) -> str:
    """Equal for a row and its baseline: the same run and the same case."""
    return canonical_json({"run": str(row.get("run_id")), "case": case_fields(row)})


def with_pair_keys(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with a `pair_key` column (computed once: it parses every row's config)."""
    return df.assign(pair_key=[pair_key(r) for _, r in df.iterrows()]) if not df.empty else df.assign(pair_key=[])


def varying_fields(rows: Iterable[pd.Series]) -> list[str]:
    """The case fields (not strategy, not context) whose value differs between `rows`, sorted."""
    cases = [case_fields(r) for r in rows]
    keys = sorted({k for c in cases for k in c} - set(CONTEXT_COLUMNS))
    return [k for k in keys if len({canonical_json(c.get(k)) for c in cases}) > 1]


def variant_label(row: pd.Series, fields: list[str]) -> str:
    """`ws=2 · op=all_reduce`: the values of `fields` for this row (a field the row does not set is left out)."""
    case = case_fields(row)
    return " · ".join(f"{_short(k)}={case[k]}" for k in fields if not fmt.missing(case.get(k)))


def variant_labels(df: pd.DataFrame) -> dict[Any, str]:
    """Each row's label among the rows of its model x workload: the fields that vary there, strategy aside."""
    labels: dict[Any, str] = {}
    for _, group in df.groupby(["model", "workload"], sort=False, dropna=False):
        rows = [r for _, r in group.iterrows()]
        fields = varying_fields(rows)
        labels.update({r.name: variant_label(r, fields) for r in rows})
    return labels


def latest(df: pd.DataFrame) -> pd.DataFrame:
    """The most recent row of every trial (history key and seed), in the order of `df`."""
    if df.empty or "history_key" not in df:
        return df
    keys = df["history_key"].fillna(df["run_id"].astype(str) + "/" + df["trial_id"].astype(str))
    keys = keys.astype(str) + "/seed=" + pd.Series([str(row_seed(r)) for _, r in df.iterrows()], index=df.index)
    started = pd.to_datetime(df["started_at"], utc=True) if "started_at" in df else pd.Series(0, index=df.index)
    order = pd.DataFrame({"key": keys, "started": started}).sort_values("started", kind="stable")
    keep = order.drop_duplicates("key", keep="last").index
    return df.loc[sorted(keep)]


@dataclass(frozen=True, slots=True)
class Quantity:
    """A column the report compares across strategies, and how to read it."""

    column: str
    label: str
    unit: str
    higher_is_better: bool = False


# In order of preference: the first one a group measured is its accuracy column.
ACCURACY = (
    Quantity("eval_loss", "eval loss", "nats"),
    Quantity("perplexity", "perplexity", "ppl"),
    Quantity("kl_mean", "KL to the uncompressed model", "nats"),
    Quantity("top1_agreement", "top-1 agreement", "ratio", higher_is_better=True),
    Quantity("embedding_cosine", "embedding cosine", "ratio", higher_is_better=True),
)
WIRE_BYTES = Quantity("wire_bytes_per_step", "wire bytes/step", "B")
LOGICAL_BYTES = Quantity("comm_logical_bytes_per_step", "logical bytes/step", "B")
RSS = Quantity("mem_rss_peak_bytes_max", "peak RSS (max rank)", "B")
CUDA_ALLOCATED = Quantity("mem_cuda_max_allocated_bytes_max", "peak CUDA allocated (max rank)", "B")


def first_measured(ok: pd.DataFrame, choices: Iterable[Quantity]) -> Quantity | None:
    """The first quantity with a value in any of `ok`'s rows."""
    for q in choices:
        if q.column in ok and ok[q.column].notna().any():
            return q
    return None


def bytes_quantity(ok: pd.DataFrame) -> Quantity | None:
    """Measured wire bytes where every row that moved bytes has them, else logical bytes (nccl-tests S).

    Logical all_gather bytes count every rank's payload, so a compressing all_gather hook looks
    n/2 times costlier than it is next to an all_reduce; wire bytes do not, so they come first.
    """
    moved = ok[ok[LOGICAL_BYTES.column].fillna(0) > 0] if LOGICAL_BYTES.column in ok else ok.iloc[:0]
    if moved.empty:
        return None
    if WIRE_BYTES.column in moved and moved[WIRE_BYTES.column].notna().all():
        return WIRE_BYTES
    return LOGICAL_BYTES


def memory_quantity(ok: pd.DataFrame) -> Quantity | None:
    return first_measured(ok, (CUDA_ALLOCATED, RSS))


def _short(key: str) -> str:
    return _SHORT.get(key, key.removeprefix("options."))


def _plain(value: Any) -> Any:
    if fmt.missing(value):
        return None
    return value.item() if hasattr(value, "item") else value


@dataclass(frozen=True, slots=True)
class ReportData:
    """The rows a report is built from: every row (history, baselines) and the latest row of each trial."""

    rows: pd.DataFrame  # every row, with its pair_key
    current: pd.DataFrame  # the latest row of every trial: what the tables and charts show
    comm: pd.DataFrame  # per-collective rows of those runs
    labels: dict[Any, str]  # index of a current row -> its variant label within its model x workload

    @classmethod
    def of(cls, df: pd.DataFrame, comm: pd.DataFrame) -> ReportData:
        keyed = with_pair_keys(df)
        current = latest(keyed)
        return cls(keyed, current, comm, variant_labels(current))

    @property
    def runs(self) -> list[str]:
        return sorted(self.rows["run_id"].astype(str).unique()) if not self.rows.empty else []

    def ok_baselines(self) -> pd.DataFrame:
        r = self.rows
        return r[(r["strategy"] == BASELINE) & (r["status"] == "ok")].drop_duplicates("pair_key", keep="last")

    def with_baseline(self, rows: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
        """`rows` with `<column>_base`: the value of the ok baseline row of the same case and run (NaN if none)."""
        cols = [c for c in columns if c in self.rows]
        base = self.ok_baselines()[["pair_key", *cols]].rename(columns={c: f"{c}_base" for c in cols})
        merged = rows.merge(base, on="pair_key", how="left")
        merged.index = rows.index
        return merged

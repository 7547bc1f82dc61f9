"""Result rows grouped into comparable trials (by history key), their status, and why two keys differ."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pandas as pd

from bench.config import flatten
from bench.contracts import NOT_IN_CASE
from bench.errors import BenchError
from bench.system import HISTORY_CONTEXT, HISTORY_HARDWARE

# The history key hashes the config minus NOT_IN_CASE, plus the software context and hardware
# (bench.system.history_key), read from these columns.
CONTEXT_COLUMNS = (*HISTORY_CONTEXT.values(), *HISTORY_HARDWARE.values())
# A "not comparable" row is diffed against the closest row on the other side with the same case.
CASE_COLUMNS = ("strategy", "model", "workload")


class Status(StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class TrialRef:
    """Which trial a verdict is about: its history key and the fields a reader recognises it by."""

    history_key: str
    strategy: str
    model: str
    workload: str
    device: str
    world_size: int

    @classmethod
    def of(cls, row: pd.Series) -> TrialRef:
        ws = row.get("world_size")
        return cls(
            history_key=str(row["history_key"]),
            strategy=str(row.get("strategy")),
            model=str(row.get("model")),
            workload=str(row.get("workload")),
            device=str(row.get("device")),
            world_size=int(ws) if ws is not None and not pd.isna(ws) else 0,
        )

    @property
    def label(self) -> str:
        return f"{self.strategy} {self.model} {self.workload} {self.device} x{self.world_size}"


@dataclass(frozen=True, slots=True)
class Side:
    """The rows of one history key on one side (several when a side holds repeated runs)."""

    trial: TrialRef
    rows: pd.DataFrame

    @property
    def ok_rows(self) -> pd.DataFrame:
        return self.rows[self.rows["status"] == Status.OK]

    @property
    def status(self) -> Status:
        """ok if any row is ok (a repeat that passed), else failed if any failed, else skipped."""
        seen = set(self.rows["status"])
        for status in (Status.OK, Status.FAILED):
            if status in seen:
                return status
        return Status.SKIPPED

    @property
    def error(self) -> str:
        """The last line of the first recorded error (a failure's root cause, or a skip's reason)."""
        errors = [str(e) for e in self.rows["error"] if isinstance(e, str) and e.strip()]
        return errors[0].strip().splitlines()[-1] if errors else ""


@dataclass(frozen=True, slots=True)
class FieldDiff:
    """A key field that differs: its dotted name and its value on each side (None where absent)."""

    field: str
    base: Any
    candidate: Any


def sides(df: pd.DataFrame, what: str) -> dict[str, Side]:
    """Rows grouped by history key, in order of first appearance; `what` names the input in errors."""
    if "history_key" not in df or df["history_key"].isna().any():
        raise BenchError(f"{what}: rows without a history_key cannot be compared")
    return {str(key): Side(TrialRef.of(rows.iloc[0]), rows) for key, rows in df.groupby("history_key", sort=False)}


def key_fields(row: pd.Series) -> dict[str, Any]:
    """What a row's history key is made of: its flattened config (dotted names) and its context columns."""
    raw = row.get("config")
    try:
        config = json.loads(raw) if isinstance(raw, str) else {}
    except json.JSONDecodeError:
        raise BenchError(f"trial {row.get('trial_id')} of run {row.get('run_id')}: `config` is not JSON") from None
    fields = {k: v for k, v in flatten(config).items() if k.split(".")[0] not in NOT_IN_CASE}
    fields.update({c: _plain(row.get(c)) for c in CONTEXT_COLUMNS if c in row.index})
    return fields


def field_diffs(base: pd.Series, candidate: pd.Series) -> tuple[FieldDiff, ...]:
    """Every key field whose value differs between two rows, sorted by name."""
    b, c = key_fields(base), key_fields(candidate)
    return tuple(FieldDiff(k, b.get(k), c.get(k)) for k in sorted(b.keys() | c.keys()) if b.get(k) != c.get(k))


def closest(row: pd.Series, others: list[pd.Series]) -> pd.Series | None:
    """The row among `others` of the same strategy/model/workload with the fewest differing key fields."""
    same_case = [o for o in others if all(o.get(c) == row.get(c) for c in CASE_COLUMNS)]
    if not same_case:
        return None
    mine = key_fields(row)
    return min(same_case, key=lambda o: _distance(mine, key_fields(o)))


def _distance(a: dict[str, Any], b: dict[str, Any]) -> int:
    return sum(a.get(k) != b.get(k) for k in a.keys() | b.keys())


def _plain(value: Any) -> Any:
    # numpy scalars and NaN from pandas -> plain Python values that compare and print cleanly.
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value

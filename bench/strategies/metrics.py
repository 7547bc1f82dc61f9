"""Typed metrics: what a strategy or workload records about itself, declared up front and checked on write.

A `Metric` names one entry of a row's `metrics` JSON: its Python type, its unit and the
result column it also fills (None: it lives in the JSON only). Strategies declare theirs in
`Strategy.metrics`, workloads in `Workload.metrics`; the registries check each declaration
against `bench.storage.schema` when it registers (`check_declared`), the rank's recorder
(`Metrics`) refuses an undeclared key or a value of the wrong type, and the parent refuses a
rank result whose metrics break the same contract (`check_recorded`), as it refuses an
unknown rank-result field.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bench.errors import BenchError

# The Python types a metric may have, and the arrow types (by name) of the columns each may fill.
_ARROW: dict[type, tuple[str, ...]] = {  # the schema's arrow type names (bench.storage.schema)
    int: ("int64",),
    float: ("double",),
    str: ("string",),
    bool: ("bool",),
    list: ("list<item: int64>", "list<item: double>", "list<item: string>"),
    dict: (),  # JSON only
}
# What a value of each type may be at run time (numbers through their ABCs: numpy scalars count).
_ACCEPTS: dict[type, tuple[type, ...]] = {
    int: (numbers.Integral,),
    float: (numbers.Real,),
    str: (str,),
    bool: (bool,),
    list: (list, tuple),
    dict: (dict,),
}


@dataclass(frozen=True, slots=True)
class Metric:
    """One declared entry of `metrics`: name, type, unit, and the result column it fills (if any).

    `null_reason` is why that column is null when the owner ran and recorded None; a
    metric without one leaves its column's nulls unexplained (most are plainly "not this
    strategy"). None is a valid value of every metric: "not applicable" is null, not 0.
    """

    name: str
    type: type
    unit: str = ""
    column: str | None = None
    doc: str = ""
    null_reason: str | None = None

    def __post_init__(self) -> None:
        if self.type not in _ACCEPTS:
            raise TypeError(f"metric {self.name!r}: type must be one of {', '.join(t.__name__ for t in _ACCEPTS)}")

    def accepts(self, value: Any) -> bool:
        return value is None or isinstance(value, _ACCEPTS[self.type])


def check_declared(owner: str, metrics: Iterable[Metric]) -> None:
    """Raise BenchError unless every metric of `owner` is named once and fills a real column of its type and unit.

    Runs wherever a strategy registers, ranks included: the schema's columns import no pyarrow.
    """
    from bench.storage.schema import TRIAL_COLUMNS

    columns = {c.name: c for c in TRIAL_COLUMNS}
    seen: set[str] = set()
    for m in metrics:
        where = f"{owner}: metric {m.name!r}"
        if m.name in seen:
            raise BenchError(f"{where} is declared twice")
        seen.add(m.name)
        if m.column is None:
            continue
        col = columns.get(m.column)
        if col is None:
            raise BenchError(f"{where} fills column {m.column!r}, which bench.storage.schema does not have")
        if col.type not in _ARROW[m.type]:
            raise BenchError(f"{where} is {m.type.__name__} but column {m.column!r} is {col.type}")
        if col.unit != m.unit:
            raise BenchError(f"{where} is in {m.unit!r} but column {m.column!r} is in {col.unit!r}")


def by_name(metrics: Iterable[Metric]) -> dict[str, Metric]:
    return {m.name: m for m in metrics}


def check_recorded(metrics: Mapping[str, Any], declared: Mapping[str, Metric], owner: str) -> None:
    """Raise TypeError naming the undeclared keys of `metrics`, or a value whose type is not its metric's."""
    unknown = sorted(set(metrics) - set(declared))
    if unknown:
        raise TypeError(f"{owner}: undeclared metric(s) {', '.join(unknown)}; declared: {', '.join(sorted(declared)) or '(none)'}")
    for key, value in metrics.items():
        m = declared[key]
        if not m.accepts(value):
            raise TypeError(f"{owner}: metric {key!r} is declared {m.type.__name__}, got {type(value).__name__} {value!r}")


class Metrics(dict[str, Any]):
    """`TrialState.metrics`: a dict that takes only declared keys with values of their type.

    Outside `written_by` the workload writes, and the workload's declarations apply; inside it
    the strategy being applied or finished writes, and only its own. Reading is a plain dict.
    """

    def __init__(self, workload: Iterable[Metric] = (), *, owner: str = "the workload") -> None:
        super().__init__()
        self._declared = by_name(workload)
        self._owner = owner

    @contextmanager
    def written_by(self, owner: str, metrics: Iterable[Metric]) -> Iterator[None]:
        """Within this block, writes are `owner`'s and must be among `metrics`."""
        saved = self._declared, self._owner
        self._declared, self._owner = by_name(metrics), owner
        try:
            yield
        finally:
            self._declared, self._owner = saved

    def __setitem__(self, key: str, value: Any) -> None:
        check_recorded({key: value}, self._declared, self._owner)
        super().__setitem__(key, value)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def __ior__(self, other: Any) -> Metrics:  # type: ignore[override]
        self.update(other)
        return self

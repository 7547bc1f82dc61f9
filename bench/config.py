"""Dataclass helpers: build typed configs from raw values, validate, and flatten to dotted keys."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from bench.errors import BenchError

D = TypeVar("D")

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert `value` (often a string from a suite file) to `annotation`, or raise BenchError.

    Supports bool, int, float, str, Literal[...], `X | None` and tuples of those: the
    types strategy and workload params use. `where` is the dotted field name for messages.
    """
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = get_args(annotation)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, where)
            except BenchError as exc:
                errors.append(str(exc))
        raise BenchError(errors[0] if errors else f"{where}: cannot be None")
    if origin is Literal:
        choices = get_args(annotation)
        for choice in choices:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise BenchError(f"{where}: {value!r} is not one of {', '.join(map(repr, choices))}")
    if origin in (tuple, list):
        (item,) = get_args(annotation)[:1] or (Any,)
        seq = value if isinstance(value, (list, tuple)) else [value]
        return tuple(coerce(v, item, f"{where}[{i}]") for i, v in enumerate(seq))
    if annotation is Any:
        return value
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, Mapping):
            raise BenchError(f"{where}: expected a table of {annotation.__name__} fields, got {value!r}")
        return build(annotation, value, where)
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            raise BenchError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise BenchError(f"{where}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise BenchError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value), 0)
        except ValueError:
            raise BenchError(f"{where}: expected an integer, got {value!r}") from None
    if annotation is float:
        if isinstance(value, bool):
            raise BenchError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise BenchError(f"{where}: expected a number, got {value!r}") from None
    if annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise BenchError(f"{where}: expected a string, got {value!r}")
    raise TypeError(f"{where}: unsupported annotation {annotation!r}")


def build(cls: type[D], raw: Mapping[str, Any], where: str) -> D:
    """Instantiate dataclass `cls` from `raw`, coercing each field and naming bad keys.

    Unknown keys are rejected with the list of valid ones; `__post_init__` validation
    errors (ValueError) are re-raised as BenchError prefixed with `where`.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        valid = ", ".join(fields) or "(none)"
        raise BenchError(f"{where}: unknown parameter(s) {', '.join(unknown)}; valid: {valid}")
    kwargs = {k: coerce(v, hints[k], f"{where}.{k}") for k, v in raw.items()}
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise BenchError(f"{where}: {exc}") from None
    except TypeError as exc:  # a missing required field
        raise BenchError(f"{where}: {exc}") from None


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a plain, JSON-serialisable dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(obj), default=str))


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`: one level of keys for tables and history keys."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def canonical_json(obj: Any) -> str:
    """Stable JSON (sorted keys, no spaces): the input to every hash in commbench."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)

"""A tiny named registry: register once, look up by name, list the names."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from bench.errors import BenchError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names (and optional aliases) to objects of one kind.

    Registering a name twice is a programming error and raises; looking up an unknown
    name raises a `BenchError` that lists every known name, so a typo in a suite file
    tells the user what they could have written. `check`, if given, vets each object as it
    registers (e.g. a strategy's declared metrics against the schema) and raises on a bad one.
    """

    def __init__(self, kind: str, *, check: Callable[[str, T], None] | None = None) -> None:
        self.kind = kind
        self._check = check
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator form of `add`."""

        def deco(obj: T) -> T:
            self.add(name, obj, aliases=aliases)
            return obj

        return deco

    def add(self, name: str, obj: T, *, aliases: tuple[str, ...] = ()) -> None:
        for key in (name, *aliases):
            if key in self._items or key in self._aliases:
                raise ValueError(f"{self.kind} {key!r} is already registered")
        if self._check is not None:
            self._check(name, obj)
        self._items[name] = obj
        for alias in aliases:
            self._aliases[alias] = name

    def canonical(self, name: str) -> str:
        """The registered name for `name` (resolving aliases); raises on unknown names."""
        if name in self._items:
            return name
        if name in self._aliases:
            return self._aliases[name]
        known = ", ".join(self.names())
        raise BenchError(f"unknown {self.kind} {name!r}; known: {known}")

    def get(self, name: str) -> T:
        return self._items[self.canonical(name)]

    def names(self) -> list[str]:
        return sorted(self._items)

    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def import_submodules(package: str, path: Iterable[str]) -> list[str]:
    """Import every module and subpackage of `package` (its `__path__`), so their registrations run.

    Registries discover their members this way instead of a hand-kept import list: adding a
    strategy family or a workload is adding a file. Names starting with `_` are skipped.
    """
    names = sorted(m.name for m in pkgutil.iter_modules(path) if not m.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names

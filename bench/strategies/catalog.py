"""The strategies table of docs/strategies.md, generated from the registry (`commbench list strategies --markdown`).

A test keeps the page's copy current, so the table is never edited by hand.
"""

from __future__ import annotations

import dataclasses

from bench.strategies import STRATEGIES
from bench.strategies.base import Aspect, Strategy, format_value

PACKAGE = "bench.strategies"  # plugins register too; the docs list the built-in strategies
HEADER = "| strategy (defaults) | aspect | workloads | what it does |\n|---|---|---|---|"


def signature(cls: type[Strategy]) -> str:
    """`name(k=default,...)`, or the bare name for a strategy without parameters."""
    params = [f"{f.name}={format_value(f.default)}" for f in dataclasses.fields(cls.Params) if f.default is not dataclasses.MISSING]
    return f"{cls.name}({','.join(params)})" if params else cls.name


def row(cls: type[Strategy], aliases: list[str]) -> str:
    name = f"`{signature(cls)}`" + (f" (alias {', '.join(f'`{a}`' for a in aliases)})" if aliases else "")
    aspect = "–" if cls.aspect == Aspect.NONE else cls.aspect.name
    if cls.implicit:
        aspect += " (implicit)"
    workloads = "all" if cls.workloads >= {"train", "infer", "transfer"} else ", ".join(sorted(cls.workloads))
    return f"| {name} | {aspect} | {workloads} | {cls.summary} |"


def markdown() -> str:
    """Every built-in strategy, in application order (aspect, then order within the aspect)."""
    aliases: dict[str, list[str]] = {}
    for alias, name in STRATEGIES.aliases().items():
        aliases.setdefault(name, []).append(alias)
    builtin = (STRATEGIES.get(n) for n in STRATEGIES.names())
    classes = sorted((c for c in builtin if c.__module__.startswith(PACKAGE)), key=lambda c: (c.aspect, c.order, c.name))
    return "\n".join([HEADER, *(row(c, sorted(aliases.get(c.name, []))) for c in classes)])

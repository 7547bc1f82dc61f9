"""Parse `a+b(k=v)` strategy compositions, validate them, and apply them aspect by aspect."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.config import build
from bench.errors import BenchError
from bench.registry import Registry
from bench.strategies.base import Aspect, Strategy, TrialState

if TYPE_CHECKING:
    from bench.contracts import TrialConfig

_TERM = re.compile(r"\s*([A-Za-z_][\w\-]*)\s*(?:\((.*)\))?\s*$", re.S)


def split_top_level(text: str, sep: str) -> list[str]:
    """Split on `sep` outside parentheses and quotes."""
    parts, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise BenchError(f"strategy {text!r}: unbalanced ')'")
        elif ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    if depth or quote:
        raise BenchError(f"strategy {text!r}: unbalanced parentheses or quotes")
    parts.append("".join(cur))
    return parts


def parse_term(term: str, registry: Registry[type[Strategy]]) -> Strategy:
    """`powersgd(rank=4)` -> an instance with validated, typed params."""
    m = _TERM.match(term)
    if not m or not term.strip():
        raise BenchError(f"strategy term {term!r} is not of the form name or name(k=v,...)")
    name, argtext = m.group(1), m.group(2)
    cls = registry.get(name)
    fields = [f.name for f in dataclasses.fields(cls.Params) if f.init]
    raw: dict[str, Any] = {}
    if argtext and argtext.strip():
        for i, arg in enumerate(split_top_level(argtext, ",")):
            key, eq, value = arg.partition("=")
            if not eq:
                if i >= len(fields) or raw:
                    raise BenchError(f"strategy {name}: positional argument {arg.strip()!r} not allowed here")
                key, value = fields[i], arg
            raw[key.strip()] = value.strip().strip("'\"")
    return build_strategy(cls, raw)


def build_strategy(cls: type[Strategy], raw: dict[str, Any]) -> Strategy:
    return cls(build(cls.Params, raw, where=f"strategy {cls.name}"))


@dataclass(frozen=True)
class Composition:
    """An ordered, validated tuple of strategies; `baseline` is the empty composition."""

    strategies: tuple[Strategy, ...]

    @classmethod
    def parse(cls, text: str, registry: Registry[type[Strategy]]) -> Composition:
        if not text or not text.strip():
            raise BenchError("empty strategy")
        terms = [parse_term(t, registry) for t in split_top_level(text, "+")]
        return cls.of(terms)

    @classmethod
    def of(cls, strategies: list[Strategy]) -> Composition:
        # `baseline` (no aspect) and implicit defaults (e.g. `ddp`) name no technique of their
        # own: `ddp` and `baseline` are one trial. `with_defaults` adds the implicit ones back.
        real = tuple(s for s in strategies if s.aspect != Aspect.NONE and not s.implicit)
        validate(real)
        return cls(real)

    def with_defaults(self, defaults: list[Strategy], workload: str) -> Composition:
        """This composition plus each implicit default for `workload` whose exclusive group it leaves empty."""
        groups = {s.exclusive for s in self.strategies if s.exclusive}
        replaced = any(s.replaces_ddp for s in self.strategies)  # DDP is the only implicit layout
        extra = [d for d in defaults if workload in d.workloads and d.exclusive not in groups and not replaced]
        merged = sorted((*self.strategies, *extra), key=lambda s: (s.aspect, s.order))
        validate(tuple(merged))
        return Composition(tuple(merged))

    @property
    def canonical(self) -> str:
        return "+".join(s.canonical() for s in self.strategies if not s.implicit) or "baseline"

    def params(self) -> list[dict[str, Any]]:
        return [{"name": s.name, "params": s.param_dict()} for s in self.strategies]

    @property
    def replaces_ddp(self) -> bool:
        return any(s.replaces_ddp for s in self.strategies)

    def skip_reason(self, cfg: TrialConfig) -> str | None:
        """First reason, known before launch, why this composition cannot run for `cfg`."""
        for s in self.strategies:
            if cfg.workload not in s.workloads:
                applies = ", ".join(sorted(s.workloads))
                return f"{s.name} does not apply to the {cfg.workload} workload (only {applies})"
            reason = s.skip_reason(cfg)
            if reason:
                return f"{s.name}: {reason}"
        return None

    def check(self, cfg: TrialConfig) -> None:
        """Each strategy's config-time check against the others (BenchError on an impossible trial)."""
        names = [s.name for s in self.strategies]
        for s in self.strategies:
            if cfg.workload in s.workloads:
                s.check(cfg, [n for n in names if n != s.name])

    def apply(self, aspect: Aspect, state: TrialState) -> None:
        """Apply the strategies of `aspect`, each writing only the metrics it declares."""
        for s in self.strategies:
            if s.aspect == aspect:
                with state.metrics.written_by(s.name, s.metrics):
                    s.apply(state)

    def finish(self, state: TrialState) -> None:
        """Let every strategy record what it measured about itself, after the run (its declared metrics only)."""
        for s in self.strategies:
            with state.metrics.written_by(s.name, s.metrics):
                s.finish(state)

    def has(self, name: str) -> bool:
        return any(s.name == name for s in self.strategies)


def validate(strategies: tuple[Strategy, ...]) -> None:
    """Reject duplicates, conflicts and an order that would apply techniques backwards."""
    seen: dict[str, Strategy] = {}
    groups: dict[str, Strategy] = {}
    for prev, cur in zip(strategies, strategies[1:]):
        if (cur.aspect, cur.order) < (prev.aspect, prev.order):
            raise BenchError(
                f"strategy order: {cur.name} ({cur.aspect.name.lower()}) must come before "
                f"{prev.name} ({prev.aspect.name.lower()}); write them in application order"
            )
    for s in strategies:
        if s.name in seen:
            raise BenchError(f"strategy {s.name} appears twice in one composition")
        seen[s.name] = s
        if s.exclusive:
            if s.exclusive in groups:
                other = groups[s.exclusive].name
                raise BenchError(f"strategies {other} and {s.name} are both {s.exclusive}s; pick one")
            groups[s.exclusive] = s
    if any(s.replaces_ddp for s in strategies):
        needs = [s.name for s in strategies if s.needs_ddp]
        if needs:
            wrapper = next(s.name for s in strategies if s.replaces_ddp)
            raise BenchError(f"{', '.join(needs)} configures DDP and cannot compose with {wrapper}, which replaces DDP")

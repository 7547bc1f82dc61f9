"""Registry lookups, composition parsing, canonical names and order validation."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from bench.errors import BenchError
from bench.registry import Registry
from bench.strategies import Aspect, Strategy, parse
from bench.strategies.compose import Composition, split_top_level


def test_registry_rejects_duplicates_and_lists_known_names() -> None:
    reg: Registry[int] = Registry("thing")
    reg.add("a", 1, aliases=("alpha",))
    with pytest.raises(ValueError, match="already registered"):
        reg.add("a", 2)
    with pytest.raises(ValueError):
        reg.add("b", 2, aliases=("alpha",))
    assert reg.get("alpha") == 1 and reg.canonical("alpha") == "a"
    with pytest.raises(BenchError, match=r"unknown thing 'zzz'; known: a"):
        reg.get("zzz")


def test_unknown_strategy_lists_known_ones() -> None:
    with pytest.raises(BenchError) as exc:
        parse("no_such_thing")
    assert "baseline" in str(exc.value) and "fp16_compress" in str(exc.value)


def test_baseline_is_the_empty_composition() -> None:
    comp = parse("baseline")
    assert comp.strategies == () and comp.canonical == "baseline"


def test_alias_resolves_to_canonical_name() -> None:
    assert parse("ddp_fp16_hook").canonical == "fp16_compress"


def test_split_respects_parentheses_and_quotes() -> None:
    assert split_top_level("a+b(x=1,y='p+q')+c", "+") == ["a", "b(x=1,y='p+q')", "c"]
    with pytest.raises(BenchError):
        split_top_level("a(b", "+")


# Test-local strategies registered in a private registry, so the global one stays clean.
@dataclass(kw_only=True, slots=True, frozen=True)
class _Rank:
    rank: int = 4
    error_feedback: bool = True
    ratio: float = 0.5

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError("rank must be >= 1")


class _Model(Strategy):
    name, summary, aspect, order, Params = "m", "", Aspect.MODEL, 10, _Rank


class _Quant(Strategy):
    name, summary, aspect, order = "q", "", Aspect.MODEL, 30


class _Hook1(Strategy):
    name, summary, aspect, exclusive, Params, needs_ddp = "h1", "", Aspect.COMM, "DDP comm hook", _Rank, True


class _Hook2(Strategy):
    name, summary, aspect, exclusive = "h2", "", Aspect.COMM, "DDP comm hook"


class _Fsdp(Strategy):
    name, summary, aspect, replaces_ddp = "fsdp", "", Aspect.LAYOUT, True


@pytest.fixture
def reg() -> Registry[type[Strategy]]:
    r: Registry[type[Strategy]] = Registry("strategy")
    for cls in (_Model, _Quant, _Hook1, _Hook2, _Fsdp):
        r.add(cls.name, cls)
    return r


def test_params_are_typed_and_canonical_lists_non_defaults(reg: Registry[type[Strategy]]) -> None:
    comp = Composition.parse("m(8, error_feedback=false)+h1", reg)
    m = comp.strategies[0]
    assert m.params == _Rank(rank=8, error_feedback=False)
    assert comp.canonical == "m(rank=8,error_feedback=false)+h1"
    assert comp.params() == [
        {"name": "m", "params": {"rank": 8, "error_feedback": False, "ratio": 0.5}},
        {"name": "h1", "params": {"rank": 4, "error_feedback": True, "ratio": 0.5}},
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("m(rank=0)", r"strategy m: rank must be >= 1"),
        ("m(rank=four)", r"strategy m.rank: expected an integer"),
        ("m(ratio=x)", r"strategy m.ratio: expected a number"),
        ("m(error_feedback=maybe)", r"strategy m.error_feedback: expected true/false"),
        ("m(bogus=1)", r"unknown parameter\(s\) bogus; valid: rank, error_feedback, ratio"),
        ("q+m", r"m \(model\) must come before q \(model\)"),
        ("h1+m", r"m \(model\) must come before h1 \(comm\)"),
        ("h1+h2", r"both DDP comm hooks"),
        ("m+m", r"appears twice"),
        ("fsdp+h1", r"h1 configures DDP and cannot compose with fsdp, which replaces DDP"),
        ("m(", r"unbalanced"),
        ("", r"empty strategy"),
    ],
)
def test_bad_compositions_are_rejected_with_a_clear_message(reg: Registry[type[Strategy]], text: str, message: str) -> None:
    with pytest.raises(BenchError, match=message):
        Composition.parse(text, reg)


def test_written_order_is_the_application_order(reg: Registry[type[Strategy]]) -> None:
    comp = Composition.parse("m+q+h1", reg)
    assert [s.name for s in comp.strategies] == ["m", "q", "h1"]


def test_ddp_is_the_implicit_training_layout_and_never_named() -> None:
    from bench.strategies import effective

    assert parse("ddp").canonical == "baseline" and parse("ddp+fp16_compress").canonical == "fp16_compress"
    train = effective(parse("bucket_cap_mb(mb=1.0)+fp16_compress+grad_accum"), "train")
    assert [s.name for s in train.strategies] == ["bucket_cap_mb", "ddp", "fp16_compress", "grad_accum"]
    assert train.canonical == "bucket_cap_mb(mb=1.0)+fp16_compress+grad_accum"
    assert effective(parse("baseline"), "infer").strategies == ()  # inference has no training layout


def test_an_explicit_layout_replaces_the_implicit_one(reg: Registry[type[Strategy]]) -> None:
    class _Ddp(Strategy):
        name, summary, aspect, exclusive, implicit = "ddp", "", Aspect.LAYOUT, "layout", True
        workloads = frozenset({"train"})

    class _Sharded(Strategy):
        name, summary, aspect, exclusive, replaces_ddp = "sharded", "", Aspect.LAYOUT, "layout", True

    default = [_Ddp(_Ddp.Params())]
    assert [s.name for s in Composition.parse("m", reg).with_defaults(default, "train").strategies] == ["m", "ddp"]
    assert Composition.of([_Sharded(_Sharded.Params())]).with_defaults(default, "train").canonical == "sharded"
    with pytest.raises(BenchError, match="configures DDP and cannot compose with sharded"):
        Composition.of([_Sharded(_Sharded.Params()), _Hook1(_Rank())])


def test_strategy_families_are_discovered_from_the_package() -> None:
    import pkgutil

    import bench.strategies as pkg
    from bench.strategies import FAMILIES, STRATEGIES

    modules = {m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")}
    assert set(FAMILIES) == modules
    modules_of = (STRATEGIES.get(n).__module__ for n in STRATEGIES.names())
    registered_in = {m.split(".")[2] for m in modules_of if m.startswith("bench.strategies.")}  # not test plugins
    assert registered_in <= modules and {"ddp", "grad_compression", "pruning"} <= registered_in

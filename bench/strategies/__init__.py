"""The strategy registry. Each family lives in its own module (or subpackage) and registers itself here.

Families are found by importing every module of this package, so adding one is adding a file.
"""

from bench.registry import Registry, import_submodules
from bench.strategies.base import Aspect, Strategy, TrialState
from bench.strategies.compose import Composition
from bench.strategies.metrics import Metric, check_declared


def check_strategy(name: str, cls: type[Strategy]) -> None:
    """A strategy's declared metrics must fill real columns, of their type and unit."""
    check_declared(f"strategy {name}", cls.metrics)


STRATEGIES: Registry[type[Strategy]] = Registry("strategy", check=check_strategy)


def parse(text: str) -> Composition:
    """Parse and validate a composition such as `bf16_autocast+powersgd(rank=4)`."""
    return Composition.parse(text, STRATEGIES)


def effective(comp: Composition, workload: str) -> Composition:
    """`comp` as it runs on `workload`: with the implicit defaults (e.g. the `ddp` layout for train)."""
    defaults = [cls(cls.Params()) for cls in map(STRATEGIES.get, STRATEGIES.names()) if cls.implicit]
    return comp.with_defaults(defaults, workload)


FAMILIES = import_submodules(__name__, __path__)

__all__ = ["FAMILIES", "STRATEGIES", "Composition", "Aspect", "Metric", "Strategy", "TrialState", "check_strategy", "effective", "parse"]

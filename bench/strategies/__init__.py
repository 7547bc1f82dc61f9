"""The strategy registry. Each family lives in its own module and registers itself here."""

from bench.registry import Registry
from bench.strategies.base import Phase, Strategy, TrialState
from bench.strategies.compose import Composition

STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


def parse(text: str) -> Composition:
    """Parse and validate a composition such as `bf16_autocast+powersgd(rank=4)`."""
    return Composition.parse(text, STRATEGIES)


# Families register on import; keep this list in sync with the modules in this package.
from bench.strategies import accumulation, baseline, ddp_options, grad_compression, low_rank, pruning, quantization  # noqa: E402,F401

__all__ = ["STRATEGIES", "Composition", "Phase", "Strategy", "TrialState", "parse"]

"""`baseline`: plain DDP in fp32, the reference every other strategy is compared with."""

from __future__ import annotations

from bench.strategies import STRATEGIES
from bench.strategies.base import Aspect, Strategy


@STRATEGIES.register("baseline")
class Baseline(Strategy):
    """Changes nothing: train under DDP (fp32 gradients), infer with the bare model."""

    name = "baseline"
    summary = "no optimization: fp32 DDP for training, the plain model for inference"
    aspect = Aspect.NONE

"""Magnitude pruning with torch.nn.utils.prune (per layer, global, structured), made permanent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune
from transformers.pytorch_utils import Conv1D

from bench.strategies import STRATEGIES
from bench.strategies.base import Aspect, Strategy, TrialState
from bench.strategies.layers import DenseLayer, linear_weight, target_layers
from bench.strategies.metrics import Metric


def check_amount(amount: float) -> None:
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"amount must be in [0, 1), got {amount}")


@dataclass(kw_only=True, slots=True, frozen=True)
class PruneParams:
    amount: float = 0.5  # fraction of weights set to zero
    head: bool = False  # also prune the LM head (tied to the input embedding: prunes it too)

    def __post_init__(self) -> None:
        check_amount(self.amount)


@dataclass(kw_only=True, slots=True, frozen=True)
class StructuredParams:
    amount: float = 0.5  # fraction of channels (whole rows or columns) set to zero
    n: float = 2.0  # the norm ranking channels: 1, 2, ... or inf
    dim: int = 0  # in nn.Linear's (out, in) layout: 0 = output channels, 1 = input channels
    head: bool = False

    def __post_init__(self) -> None:
        check_amount(self.amount)
        if not self.n > 0:
            raise ValueError(f"n must be > 0 (an Ln norm), got {self.n}")
        if self.dim not in (0, 1):
            raise ValueError(f"dim must be 0 (output channels) or 1 (input channels), got {self.dim}")


def zeros_and_total(tensors: list[torch.Tensor]) -> tuple[int, int]:
    zeros = sum(int((t == 0).sum()) for t in tensors)
    return zeros, sum(t.numel() for t in tensors)


def sparsity_metrics(model: nn.Module, layers: dict[str, DenseLayer]) -> dict[str, Any]:
    """Achieved sparsity of the pruned weights and of all parameters (tied ones once)."""
    pz, pn = zeros_and_total([m.weight.detach() for m in layers.values()])
    az, an = zeros_and_total([p.detach() for p in model.parameters()])
    return {
        "pruned_layers": len(layers),
        "pruned_weights": pn,
        "sparsity_pruned": pz / pn if pn else None,
        "sparsity_overall": az / an if an else None,
    }


class PruneStrategy(Strategy):
    """Base for the pruning family: zero weights in place, keep shapes, report sparsity."""

    aspect = Aspect.MODEL
    order = 10  # prune before factorising or quantizing: both would blur the magnitudes
    workloads = frozenset({"infer", "transfer"})
    Params = PruneParams
    metrics: tuple[Metric, ...] = (
        Metric("pruned_layers", int, "layers", doc="layers pruned"),
        Metric("pruned_weights", int, "count", doc="weights in those layers"),
        Metric("sparsity_pruned", float, "ratio", column="sparsity", doc="share of zeros in the pruned weights"),
        Metric("sparsity_overall", float, "ratio", doc="share of zeros in all parameters (tied ones once)"),
    )

    def prune(self, layers: dict[str, DenseLayer]) -> None:
        raise NotImplementedError

    def layer_metrics(self, layers: dict[str, DenseLayer]) -> dict[str, Any]:
        """Family-specific measurements of the pruned layers."""
        return {}

    @torch.no_grad()
    def apply(self, state: TrialState) -> None:
        layers = target_layers(state.model, head=self.params.head)
        self.prune(layers)
        state.metrics.update(sparsity_metrics(state.model, layers), **self.layer_metrics(layers))


@STRATEGIES.register("prune_l1")
class PruneL1(PruneStrategy):
    """`prune.l1_unstructured` on each layer: every weight matrix loses the same fraction."""

    name = "prune_l1"
    summary = "L1 unstructured pruning, the same fraction in every Linear/Conv1D weight"

    def prune(self, layers: dict[str, DenseLayer]) -> None:
        for m in layers.values():  # one layer at a time: only one mask alive at once
            prune.l1_unstructured(m, "weight", amount=self.params.amount)
            prune.remove(m, "weight")


@STRATEGIES.register("prune_global")
class PruneGlobal(PruneStrategy):
    """`prune.global_unstructured`: the smallest weights across all layers, so layers differ."""

    name = "prune_global"
    summary = "global L1 unstructured pruning across all Linear/Conv1D weights"
    metrics = (
        *PruneStrategy.metrics,
        Metric("sparsity_layer_min", float, "ratio", doc="least share of zeros in one pruned layer"),
        Metric("sparsity_layer_max", float, "ratio", doc="greatest share of zeros in one pruned layer"),
    )

    def prune(self, layers: dict[str, DenseLayer]) -> None:
        params = [(m, "weight") for m in layers.values()]
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=self.params.amount)
        for m, name in params:
            prune.remove(m, name)

    def layer_metrics(self, layers: dict[str, DenseLayer]) -> dict[str, Any]:
        shares = [int((m.weight == 0).sum()) / m.weight.numel() for m in layers.values()]
        return {"sparsity_layer_min": min(shares, default=None), "sparsity_layer_max": max(shares, default=None)}


@STRATEGIES.register("prune_structured")
class PruneStructured(PruneStrategy):
    """`prune.ln_structured`: zero whole output channels (rows of W) with the smallest Ln norm.

    Attention heads: in q/k/v projections an output channel is one dimension of one head
    (a head owns `head_dim` consecutive rows; GPT-2's fused c_attn stacks q, k and v), so
    this removes the weakest head dimensions wherever they are, not whole heads, and
    whole-head pruning (transformers' `prune_heads`) is a different technique. Shapes stay
    the same: the zeros save compute only with a kernel that skips them, but they save
    bytes on the wire (a zero row costs one bit per element in a bitmask, one pointer in CSR).
    """

    name = "prune_structured"
    summary = "Ln structured pruning of whole output channels (rows) of every Linear/Conv1D weight"
    Params = StructuredParams
    metrics = (*PruneStrategy.metrics, Metric("channels_pruned", int, "channels", doc="all-zero channels along `dim`"))

    def prune(self, layers: dict[str, DenseLayer]) -> None:
        for m in layers.values():
            # Conv1D stores W^T, so its output channels are its columns.
            dim = 1 - self.params.dim if isinstance(m, Conv1D) else self.params.dim
            prune.ln_structured(m, "weight", amount=self.params.amount, n=self.params.n, dim=dim)
            prune.remove(m, "weight")

    def layer_metrics(self, layers: dict[str, DenseLayer]) -> dict[str, Any]:
        return {"channels_pruned": sum(zero_channels(m, self.params.dim) for m in layers.values())}


def zero_channels(layer: DenseLayer, dim: int) -> int:
    """All-zero channels of `layer` along `dim` of the (out, in) layout."""
    return int((linear_weight(layer) == 0).all(dim=1 - dim).sum())

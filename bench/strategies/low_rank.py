"""Low-rank factorisation: each weight W (out x in) becomes two Linears from its truncated SVD."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bench.models.zoo import count_params
from bench.strategies import STRATEGIES
from bench.strategies.base import Aspect, Strategy, TrialState
from bench.strategies.layers import DenseLayer, linear_weight, replace_module, target_layers
from bench.strategies.metrics import Metric

SVD = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(kw_only=True, slots=True, frozen=True)
class LowRankParams:
    rank_ratio: float | None = None  # r = round(rank_ratio x min(out, in)), at least 1
    energy: float | None = None  # smallest r whose singular values keep this share of sum(S^2)
    head: bool = False  # also factorise the LM head (unties it from the input embedding)

    def __post_init__(self) -> None:
        if (self.rank_ratio is None) == (self.energy is None):
            raise ValueError("set exactly one of rank_ratio (share of min(out, in)) or energy (share of sum S^2 kept)")
        for name in ("rank_ratio", "energy"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")


def layer_svd(layer: DenseLayer) -> SVD:
    """Thin SVD of the layer's (out, in) weight, in float32 at least."""
    w = linear_weight(layer).detach()
    return torch.linalg.svd(w.to(torch.promote_types(w.dtype, torch.float32)), full_matrices=False)


def choose_rank(s: torch.Tensor, rank_ratio: float | None, energy: float | None) -> int:
    """The rank to keep given singular values `s` (descending) and one of the two criteria."""
    k = s.numel()
    if rank_ratio is not None:
        return min(k, max(1, round(rank_ratio * k)))
    if not bool(s.any()):  # an all-zero weight: rank 1 represents it exactly
        return 1
    share = torch.cumsum(s.double() ** 2, 0) / (s.double() ** 2).sum()
    # The first r whose kept share reaches `energy` (float rounding can leave 1.0 unreached).
    return min(k, int(torch.searchsorted(share, torch.tensor([energy], dtype=share.dtype))) + 1)


def factorize(layer: DenseLayer, rank: int, usv: SVD | None = None) -> nn.Sequential:
    """Two Linears computing x -> (U_r diag(S_r)) (Vh_r x) + b: the best rank-`rank` approximation.

    They hold rank x (in + out) weights plus the original bias; at full rank the output
    equals the layer's up to float rounding.
    """
    u, s, vh = usv if usv is not None else layer_svd(layer)
    out_features, in_features = u.shape[0], vh.shape[1]
    w = layer.weight
    first = nn.Linear(in_features, rank, bias=False, device=w.device, dtype=w.dtype)
    second = nn.Linear(rank, out_features, bias=layer.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        first.weight.copy_(vh[:rank])
        second.weight.copy_(u[:, :rank] * s[:rank])
        if layer.bias is not None:
            second.bias.copy_(layer.bias)
    return nn.Sequential(first, second).train(layer.training)


def saves(rank: int, out_features: int, in_features: int) -> bool:
    """Two factors pay only when r x (out + in) < out x in."""
    return rank * (out_features + in_features) < out_features * in_features


@STRATEGIES.register("low_rank")
class LowRank(Strategy):
    """Replace each Linear/Conv1D whose factorisation saves weights by its truncated SVD."""

    name = "low_rank"
    summary = "truncated-SVD factorisation of every Linear/Conv1D weight (rank by ratio or energy kept)"
    aspect = Aspect.MODEL
    order = 20  # after pruning (which needs the original matrices), before quantization
    workloads = frozenset({"infer", "transfer"})
    Params = LowRankParams
    metrics = (
        Metric("params_before", int, "count", doc="distinct parameters before factorising"),
        Metric("params_after", int, "count", doc="and after"),
        Metric("layers_factorized", int, "layers", doc="layers replaced by two factors"),
        Metric("layers_unchanged", int, "layers", doc="candidate layers whose factors would not save weights"),
        Metric("rank_mean", float, "", doc="mean rank kept over the factorised layers"),
        Metric("energy_kept_min", float, "ratio", doc="least share of sum(S^2) a factorised layer kept"),
    )

    @torch.no_grad()
    def apply(self, state: TrialState) -> None:
        before = count_params(state.model)
        ranks: list[int] = []
        kept_energy: list[float] = []
        layers = target_layers(state.model, head=self.params.head)
        for name, layer in layers.items():
            u, s, vh = layer_svd(layer)
            rank = choose_rank(s, self.params.rank_ratio, self.params.energy)
            if not saves(rank, u.shape[0], vh.shape[1]):
                continue
            replace_module(state.model, name, factorize(layer, rank, (u, s, vh)))
            ranks.append(rank)
            kept_energy.append(float((s[:rank] ** 2).sum() / (s**2).sum().clamp_min(1e-30)))
        state.metrics.update(self.summary_metrics(before, count_params(state.model), len(layers), ranks, kept_energy))

    @staticmethod
    def summary_metrics(before: int, after: int, candidates: int, ranks: list[int], energy: list[float]) -> dict[str, Any]:
        return {
            "params_before": before,
            "params_after": after,
            "layers_factorized": len(ranks),
            "layers_unchanged": candidates - len(ranks),  # no saving at the chosen rank
            "rank_mean": sum(ranks) / len(ranks) if ranks else None,
            "energy_kept_min": min(energy) if energy else None,
        }

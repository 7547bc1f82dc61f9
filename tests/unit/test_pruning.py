"""Pruning strategies: the achieved sparsity is exactly the requested one, and stays put."""

from __future__ import annotations

import pytest
import torch
from transformers.pytorch_utils import Conv1D

from bench.errors import BenchError
from bench.strategies import parse
from bench.strategies.layers import linear_weight, target_layers
from tests.unit.tiny_models import apply, tiny_bert, tiny_gpt2, tiny_llama, tokens

MODELS = {"gpt2": tiny_gpt2, "llama": tiny_llama, "bert": tiny_bert}


def zeros(t: torch.Tensor) -> int:
    return int((t == 0).sum())


@pytest.mark.parametrize("family", sorted(MODELS))
def test_prune_l1_hits_the_amount_in_every_layer(family: str) -> None:
    model = MODELS[family]()
    state = apply("prune_l1(0.3)", model)
    layers = target_layers(model, head=False)
    assert layers and not any(hasattr(m, "weight_orig") or hasattr(m, "weight_mask") for m in layers.values())
    for name, m in layers.items():
        assert zeros(m.weight) == round(0.3 * m.weight.numel()), name
    n = sum(m.weight.numel() for m in layers.values())
    assert state.metrics["pruned_weights"] == n and state.metrics["pruned_layers"] == len(layers)
    assert state.metrics["sparsity_pruned"] == sum(round(0.3 * m.weight.numel()) for m in layers.values()) / n
    total = sum(p.numel() for p in model.parameters())
    assert state.metrics["sparsity_overall"] == pytest.approx(sum(zeros(p) for p in model.parameters()) / total)
    assert 0 < state.metrics["sparsity_overall"] < state.metrics["sparsity_pruned"]


def test_pruning_leaves_the_tied_head_alone_unless_asked() -> None:
    model = tiny_gpt2()
    apply("prune_l1(0.5)", model)
    assert zeros(model.transformer.wte.weight) == 0
    model = tiny_gpt2()
    apply("prune_l1(0.5, head=true)", model)
    assert model.lm_head.weight is model.transformer.wte.weight  # still tied after prune.remove
    assert zeros(model.transformer.wte.weight) == round(0.5 * model.transformer.wte.weight.numel())


def test_prune_global_hits_the_amount_overall_not_per_layer() -> None:
    model = tiny_llama()
    loud = model.model.layers[0].mlp.down_proj
    with torch.no_grad():
        loud.weight.mul_(10)  # ten times larger weights: global ranking should barely touch them
    state = apply("prune_global(0.4)", model)
    layers = target_layers(model, head=False)
    n = sum(m.weight.numel() for m in layers.values())
    assert sum(zeros(m.weight) for m in layers.values()) == round(0.4 * n)
    assert state.metrics["sparsity_pruned"] == round(0.4 * n) / n
    assert state.metrics["sparsity_layer_min"] == zeros(loud.weight) / loud.weight.numel() < 0.05
    assert state.metrics["sparsity_layer_max"] > 0.4


def test_prune_global_removes_the_smallest_magnitudes() -> None:
    model = tiny_llama()
    before = torch.cat([m.weight.detach().abs().flatten().clone() for m in target_layers(model, head=False).values()])
    apply("prune_global(0.25)", model)
    after = torch.cat([m.weight.detach().flatten() for m in target_layers(model, head=False).values()])
    threshold = before.kthvalue(round(0.25 * before.numel())).values
    assert bool((before[after == 0] <= threshold).all()) and bool((before[after != 0] >= threshold).all())


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_prune_structured_removes_whole_output_channels(family: str) -> None:
    model = MODELS[family]()
    state = apply("prune_structured(0.5)", model)
    layers = target_layers(model, head=False)
    channels = 0
    for name, m in layers.items():
        w = linear_weight(m)  # (out, in), whatever the storage layout (Conv1D is transposed)
        dead_rows = (w == 0).all(dim=1)
        assert int(dead_rows.sum()) == round(0.5 * w.shape[0]), name
        assert zeros(w) == int(dead_rows.sum()) * w.shape[1], name  # no zeros outside those rows
        channels += int(dead_rows.sum())
    assert any(isinstance(m, Conv1D) for m in layers.values()) == (family == "gpt2")
    assert state.metrics["channels_pruned"] == channels
    assert state.metrics["sparsity_pruned"] == pytest.approx(0.5, abs=0.02)


def test_prune_structured_by_input_channels_and_l1_norm() -> None:
    model = tiny_llama()
    proj = model.model.layers[0].mlp.down_proj
    norms = proj.weight.detach().abs().sum(0).clone()  # L1 norm of each input column
    apply("prune_structured(0.25, n=1, dim=1)", model)
    dead = (proj.weight == 0).all(dim=0)
    assert int(dead.sum()) == round(0.25 * proj.in_features)
    assert set(dead.nonzero().flatten().tolist()) == set(norms.argsort()[: int(dead.sum())].tolist())


def test_pruned_models_still_run() -> None:
    for text in ("prune_l1(0.5)", "prune_global(0.5)", "prune_structured(0.5)"):
        model = tiny_gpt2()
        apply(text, model)
        with torch.no_grad():
            assert torch.isfinite(model(tokens()).logits).all()


@pytest.mark.parametrize("text", ["prune_l1(1.0)", "prune_l1(-0.1)", "prune_structured(0.5, dim=2)", "prune_structured(0.5, n=0)"])
def test_bad_params_are_rejected(text: str) -> None:
    with pytest.raises(BenchError, match="strategy prune_"):
        parse(text)

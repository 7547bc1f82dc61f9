"""Low-rank factorisation: exact at full rank, exact parameter counts, rank by ratio or energy."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from bench.errors import BenchError
from bench.models.zoo import count_params
from bench.strategies import parse
from bench.strategies.layers import target_layers
from bench.strategies.low_rank import choose_rank, factorize
from tests.unit.tiny_models import apply, tiny_gpt2, tiny_llama, tokens


def make_layer(kind: str, out_features: int = 48, in_features: int = 80) -> nn.Module:
    torch.manual_seed(0)
    layer = nn.Linear(in_features, out_features) if kind == "linear" else Conv1D(out_features, in_features)
    nn.init.normal_(layer.bias)
    return layer


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_full_rank_reproduces_the_layer(kind: str) -> None:
    layer = make_layer(kind)
    x = torch.randn(4, 7, 80)
    full = factorize(layer, rank=48)
    torch.testing.assert_close(full(x), layer(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
@pytest.mark.parametrize("rank", [1, 5, 20])
def test_rank_r_has_exactly_r_times_n_plus_m_weights(kind: str, rank: int) -> None:
    low = factorize(make_layer(kind), rank=rank)
    assert sum(p.numel() for p in low.parameters()) == rank * (48 + 80) + 48
    # It is the best rank-r approximation: the error is the dropped singular values (Eckart-Young).
    layer = make_layer(kind)
    w = layer.weight.T if kind == "conv1d" else layer.weight
    s = torch.linalg.svdvals(w.detach())
    approx = low[1].weight @ low[0].weight
    assert torch.linalg.matrix_norm(w.detach() - approx).item() == pytest.approx(s[rank:].norm().item(), rel=1e-4)


def test_choose_rank_by_ratio_and_by_energy() -> None:
    s = torch.tensor([3.0, 2.0, 1.0])  # energy shares 9/14, 13/14, 14/14
    assert choose_rank(s, 0.5, None) == 2 and choose_rank(s, 0.01, None) == 1 and choose_rank(s, 1.0, None) == 3
    assert choose_rank(s, None, 9 / 14) == 1
    assert choose_rank(s, None, 0.7) == 2
    assert choose_rank(s, None, 0.92) == 2
    assert choose_rank(s, None, 0.95) == 3
    assert choose_rank(s, None, 1.0) == 3


def test_low_rank_strategy_factorises_only_where_it_saves() -> None:
    model = tiny_llama()  # q/o 64x64, k/v 32x64, gate/up 128x64, down 64x128
    layers = {n: (m.out_features, m.in_features) for n, m in target_layers(model, head=False).items()}
    before = count_params(model)
    ref = model(tokens()).logits.detach()
    state = apply("low_rank(0.25)", model)
    saved = 0
    for name, (o, i) in layers.items():
        r = round(0.25 * min(o, i))
        module = model.get_submodule(name)
        assert isinstance(module, nn.Sequential) == (r * (o + i) < o * i), name
        if isinstance(module, nn.Sequential):
            assert sum(p.numel() for p in module.parameters()) == r * (o + i)
            saved += o * i - r * (o + i)
    assert state.metrics["params_before"] == before
    assert state.metrics["params_after"] == count_params(model) == before - saved
    assert state.metrics["layers_factorized"] + state.metrics["layers_unchanged"] == len(layers)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # head left tied
    assert torch.isfinite(model(tokens()).logits).all() and not torch.equal(model(tokens()).logits, ref)


def test_low_rank_skips_layers_with_no_saving() -> None:
    model = tiny_gpt2()  # c_proj is 64x64: rank 32 costs 32 x 128 = 64 x 64, no saving
    state = apply("low_rank(0.5)", model)
    assert isinstance(model.transformer.h[0].attn.c_proj, Conv1D)
    assert isinstance(model.transformer.h[0].attn.c_attn, nn.Sequential)  # 64 -> 192: rank 32 saves
    assert state.metrics["layers_unchanged"] == 2


def test_energy_criterion_keeps_at_least_that_energy() -> None:
    model = tiny_gpt2()
    state = apply("low_rank(energy=0.6)", model)
    assert state.metrics["layers_factorized"] > 0 and state.metrics["energy_kept_min"] >= 0.6


@pytest.mark.parametrize("text", ["low_rank", "low_rank(rank_ratio=0.5, energy=0.9)", "low_rank(1.5)", "low_rank(energy=0)"])
def test_bad_params_are_rejected(text: str) -> None:
    with pytest.raises(BenchError, match="strategy low_rank"):
        parse(text)

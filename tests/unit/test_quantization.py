"""Quantization and casts: exact storage sizes, exact Conv1D conversion, int4 runs or says why not."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from bench.contracts import TrialConfig
from bench.errors import BenchError, SkipTrial
from bench.eval.accuracy import fidelity
from bench.models.sizing import dense_bytes
from bench.strategies import parse
from bench.strategies.layers import conv1d_to_linear, convert_conv1d, target_layers
from tests.unit.tiny_models import apply, tiny_bert, tiny_gpt2, tiny_llama, tokens

# torch 2.13 deprecates torch.ao eager quantization (and quantized tensor creation) loudly.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

MODELS = {"gpt2": tiny_gpt2, "llama": tiny_llama, "bert": tiny_bert}


def shapes(model: nn.Module) -> dict[str, tuple[int, int, int]]:
    """(out, in, bias bytes) of every target layer, read before quantization."""
    out = {}
    for name, m in target_layers(model, head=False).items():
        o, i = (m.nf, m.nx) if isinstance(m, Conv1D) else (m.out_features, m.in_features)
        out[name] = (o, i, m.bias.numel() * 4 if m.bias is not None else 0)
    return out


def logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens()).logits.float()


def test_conv1d_to_linear_is_output_identical() -> None:
    model = tiny_gpt2()
    conv = model.transformer.h[0].attn.c_attn
    x = torch.randn(3, 5, conv.nx)
    assert torch.equal(conv1d_to_linear(conv)(x), conv(x))
    ref = logits(model)
    assert convert_conv1d(model) == 8  # c_attn, c_proj, c_fc, mlp.c_proj in each of 2 blocks
    assert not any(isinstance(m, Conv1D) for m in model.modules())
    assert torch.equal(logits(model), ref)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_dynamic_int8_is_a_quarter_plus_exact_overhead(family: str) -> None:
    model = MODELS[family]()
    ref, dims = logits(model), shapes(model)
    state = apply("quant_dynamic_int8", model)
    assert state.metrics["quantized_layers"] == state.metrics["target_layers"] == len(dims)
    # Per layer: int8 weight (1/4 of fp32) + 16 B of weight qparams (float64 scale, int64 zero
    # point) + the module's own float32 scale and int64 zero_point buffers + the float32 bias.
    for name, (o, i, bias) in dims.items():
        layer = model.get_submodule(name)
        assert isinstance(layer, torch.ao.nn.quantized.dynamic.Linear), name
        assert dense_bytes(layer) == (o * i * 4) // 4 + (8 + 8) + (4 + 8) + bias, name
    assert state.metrics["layer_bytes_before"] == sum(o * i * 4 + b for o, i, b in dims.values())
    assert state.metrics["layer_bytes_after"] == sum(o * i + 28 + b for o, i, b in dims.values())
    assert type(model.get_output_embeddings()) is nn.Linear  # the tied head stays float
    fid = fidelity(ref, logits(model))
    assert fid["kl_mean"] < 1e-3 and fid["top1_agreement"] > 0.9


def test_per_channel_dynamic_int8_stores_qparams_per_row() -> None:
    model = tiny_llama()
    dims = shapes(model)
    state = apply("quant_dynamic_int8(per_channel=true)", model)
    weight = model.model.layers[0].self_attn.q_proj.weight()
    assert weight.qscheme() == torch.per_channel_affine
    # A float64 scale and an int64 zero point per output row, plus the module's 12-byte buffers.
    assert state.metrics["layer_bytes_after"] == sum(o * i + o * 16 + 12 + b for o, i, b in dims.values())


def test_int8_weight_only_stores_int8_plus_per_row_scales() -> None:
    model = tiny_llama()
    dims = shapes(model)
    state = apply("quant_int8_wo", model)
    assert state.metrics["quantized_layers"] == len(dims)
    # torchao Int8Tensor: int8 qdata (out x in), float32 scale and int8 zero point per row; no bias here.
    assert state.metrics["layer_bytes_after"] == sum(o * i + o * 4 + o * 1 + b for o, i, b in dims.values())
    assert torch.isfinite(logits(model)).all()


def test_intx_weight_only_keeps_4_bit_values_in_int8_storage() -> None:
    model = tiny_llama()
    dims = shapes(model)
    state = apply("quant_intx_wo(bits=4, group_size=32)", model)
    assert state.metrics["quantized_layers"] == len(dims)
    q = model.model.layers[0].mlp.up_proj.weight
    assert q.qdata.dtype == torch.int8 and int(q.qdata.min()) >= -8 and int(q.qdata.max()) <= 7
    # One byte per value, float32 scale + int8 zero point per group of 32 inputs.
    assert state.metrics["layer_bytes_after"] == sum(o * i + o * (i // 32) * 5 + b for o, i, b in dims.values())


@pytest.mark.parametrize("text, dtype", [("cast_fp16", torch.float16), ("cast_bf16", torch.bfloat16)])
@pytest.mark.parametrize("family", sorted(MODELS))
def test_casts_halve_the_bytes(text: str, dtype: torch.dtype, family: str) -> None:
    model = MODELS[family]()
    before = dense_bytes(model)
    state = apply(text, model)
    assert dense_bytes(model) * 2 == before
    assert {p.dtype for p in model.parameters()} == {dtype}
    assert state.metrics["dtype"] == str(dtype).removeprefix("torch.")


def test_dynamic_int8_is_skipped_on_cuda_with_its_reason() -> None:
    comp = parse("quant_dynamic_int8")
    cfg = TrialConfig(suite="t", strategy=comp.canonical, model="llama-tiny", workload="infer", device="cuda")
    assert "CPU kernels only" in comp.skip_reason(cfg)
    assert comp.skip_reason(TrialConfig(suite="t", strategy=comp.canonical, model="llama-tiny", workload="infer")) is None


def test_compression_does_not_apply_to_training() -> None:
    comp = parse("prune_l1(0.5)+quant_int8_wo")
    cfg = TrialConfig(suite="t", strategy=comp.canonical, model="llama-tiny", workload="train")
    assert "does not apply to the train workload" in comp.skip_reason(cfg)


def test_int4_weight_only_runs_with_its_size_or_says_why_not() -> None:
    comp = parse("quant_int4_wo")
    cfg = TrialConfig(suite="t", strategy=comp.canonical, model="llama-tiny", workload="infer", device="cpu")
    reason = comp.skip_reason(cfg)
    if reason is not None:
        # The probe's reason names the library, the device and each layout's own error.
        assert "Int4WeightOnlyConfig cannot run on cpu" in reason and "tile_packed_to_4d:" in reason
        pytest.skip(reason)
    model = tiny_llama()  # hidden 64, intermediate 128: group_size 64 divides every in_features
    dims = shapes(model)
    state = apply("quant_int4_wo(group_size=64)", model)
    assert state.metrics["quantized_layers"] == len(dims)
    # Two 4-bit values per byte plus a bfloat16 scale and zero point per group of 64.
    assert state.metrics["layer_bytes_after"] == sum(o * i // 2 + o * (i // 64) * 4 for o, i, _ in dims.values())


@pytest.mark.parametrize("text", ["cast_fp16+cast_bf16", "quant_int8_wo+quant_dynamic_int8"])
def test_two_quantizers_or_two_casts_do_not_compose(text: str) -> None:
    with pytest.raises(BenchError, match="pick one"):
        parse(text)


def test_a_cast_after_dynamic_int8_is_skipped_with_its_reason() -> None:
    with pytest.raises(SkipTrial, match="float32 activations only"):
        apply("quant_dynamic_int8+cast_fp16", tiny_llama())
    model = tiny_llama()
    apply("quant_int8_wo+cast_bf16", model)  # torchao weights keep their int8 data; the rest is cast
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16 and torch.isfinite(logits(model)).all()


@pytest.mark.gpu
def test_int4_weight_only_on_cuda_packs_two_values_per_byte() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    model = tiny_llama().cuda()
    dims = shapes(model)
    cfg = TrialConfig(suite="t", strategy="quant_int4_wo", model="llama-tiny", workload="infer", device="cuda")
    assert parse("quant_int4_wo").skip_reason(cfg) is None
    state = apply("quant_int4_wo(group_size=64)", model)
    assert state.metrics["quantized_layers"] == len(dims) and state.metrics["dtype"] == "bfloat16"
    # tinygemm layout: int4 pairs in int32 words, a bfloat16 (scale, zero) pair per group of 64, on a
    # weight torchao 0.18 first pads to in_features % 1024 == 0 and out_features % 8 == 0.
    def padded(o: int, i: int) -> int:
        o, i = -(-o // 8) * 8, -(-i // 1024) * 1024
        return o * i // 2 + o * (i // 64) * 4

    assert state.metrics["layer_bytes_after"] == sum(padded(o, i) for o, i, _ in dims.values())
    with torch.no_grad():
        assert torch.isfinite(model(tokens().cuda()).logits).all()


def test_fp16_is_called_slow_only_on_a_cpu_without_native_fp16() -> None:
    from bench.system import slow_fp16_reason

    assert slow_fp16_reason(frozenset({"avx2", "avx512_bf16"})) is not None
    assert slow_fp16_reason(frozenset({"avx2", "avx512_fp16"})) is None
    assert slow_fp16_reason(frozenset()) is None  # flags unknown: no claim either way
    state = apply("cast_fp16", tiny_llama())
    assert state.metrics.get("kernel_note") == slow_fp16_reason()  # this machine's answer, in the row

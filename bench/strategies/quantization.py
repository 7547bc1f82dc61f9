"""Quantization (torch.ao dynamic int8, torchao weight-only int8/int4/intx) and fp16/bf16 casts.

Every quantizer first turns GPT-2's Conv1D layers into the equivalent nn.Linear (an
exact transpose), since both torch.ao and torchao only recognise nn.Linear and would
otherwise leave GPT-2's attention and MLP weights in float32. torchao is imported
lazily: it loads several native libraries and is only needed by its own strategies.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import nn

from bench.contracts import TrialConfig
from bench.errors import SkipTrial
from bench.models.sizing import dense_bytes
from bench.strategies import STRATEGIES
from bench.strategies.base import Aspect, Strategy, TrialState
from bench.strategies.layers import convert_conv1d, target_layers
from bench.strategies.metrics import Metric
from bench.system import slow_fp16_reason

Int4Packing = Literal["tile_packed_to_4d", "plain", "preshuffled", "plain_int32"]
GROUP_SIZES = (32, 64, 128, 256)


@dataclass(kw_only=True, slots=True, frozen=True)
class QuantParams:
    head: bool = False  # also quantize the LM head (unties it: the embedding stays float)


@dataclass(kw_only=True, slots=True, frozen=True)
class DynamicParams:
    per_channel: bool = False  # one weight scale per output row instead of one per tensor
    head: bool = False


@dataclass(kw_only=True, slots=True, frozen=True)
class Int4Params:
    group_size: int = 128  # input features sharing one scale and zero point
    # torchao's int4 layouts: tile_packed_to_4d is tinygemm (CUDA sm80+, bfloat16); plain and
    # preshuffled need the mslk kernels; plain_int32 is for XPU/NPU.
    packing: Int4Packing = "tile_packed_to_4d"
    head: bool = False

    def __post_init__(self) -> None:
        if self.group_size not in GROUP_SIZES:
            raise ValueError(f"group_size must be one of {GROUP_SIZES}, got {self.group_size}")


@dataclass(kw_only=True, slots=True, frozen=True)
class IntxParams:
    bits: int = 4
    group_size: int = 32
    head: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 8:
            raise ValueError(f"bits must be in [1, 8], got {self.bits}")
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")


DTYPE = Metric("dtype", str, doc="the model's floating dtype after the strategy")


def layer_bytes(model: nn.Module, names: list[str]) -> int:
    """Storage bytes (see `dense_bytes`) of the submodules `names`."""
    return sum(dense_bytes(model.get_submodule(n)) for n in names)


class Quantizer(Strategy):
    """Base: convert Conv1D, pick the target Linears, quantize them, record their bytes."""

    aspect = Aspect.MODEL
    order = 30  # after pruning and low-rank, which need float matrices
    workloads = frozenset({"infer", "transfer"})
    exclusive = "quantizer"  # a second quantizer would find no float Linear weights left
    Params = QuantParams
    metrics: tuple[Metric, ...] = (
        Metric("quantized_layers", int, "layers", doc="target layers that were quantized"),
        Metric("target_layers", int, "layers", doc="layers the quantizer was given"),
        Metric("layer_bytes_before", int, "B", doc="storage of the target layers before"),
        Metric("layer_bytes_after", int, "B", doc="and after quantizing"),
    )

    def quantize(self, state: TrialState, names: list[str]) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def apply(self, state: TrialState) -> None:
        convert_conv1d(state.model)
        names = list(target_layers(state.model, head=self.params.head))
        before = layer_bytes(state.model, names)
        self.quantize(state, names)
        state.metrics.update(
            quantized_layers=sum(is_quantized(state.model.get_submodule(n)) for n in names),
            target_layers=len(names),
            layer_bytes_before=before,
            layer_bytes_after=layer_bytes(state.model, names),
        )


def is_quantized(module: nn.Module) -> bool:
    """A torch.ao quantized module, or one whose weight is a torchao tensor subclass."""
    if not isinstance(module, nn.Linear):
        return True  # torch.ao swapped in its own (non-nn.Linear) module
    return type(module.weight) not in (torch.Tensor, nn.Parameter)


@STRATEGIES.register("quant_dynamic_int8")
class DynamicInt8(Quantizer):
    """`torch.ao.quantization.quantize_dynamic`: int8 weights, activations quantized per batch.

    Weights get one scale per tensor (or per output row with `per_channel`); activations
    one per tensor, recomputed at every call, in 7 bits (the module passes `reduce_range`). On
    SmolLM2 that activation rounding, not the weights, is what costs accuracy: per-channel
    weights barely help, and weight-only int8 (`quant_int8_wo`) keeps the perplexity.

    torch 2.13 deprecates torch.ao eager quantization in favour of torchao (pytorch/ao#2259)
    and warns on use; it still works and is the long-standing CPU baseline, so it stays.
    """

    name = "quant_dynamic_int8"
    summary = "torch.ao dynamic int8 quantization of every Linear (CPU kernels only)"
    Params = DynamicParams

    def skip_reason(self, cfg: TrialConfig) -> str | None:
        if cfg.device != "cpu":
            return "torch.ao dynamic quantized Linear has CPU kernels only (fbgemm/x86/qnnpack), none for CUDA"
        return None

    def quantize(self, state: TrialState, names: list[str]) -> None:
        tq = torch.ao.quantization
        qconfig = tq.per_channel_dynamic_qconfig if self.params.per_channel else tq.default_dynamic_qconfig
        # Qualified names rather than {nn.Linear}, so that the LM head can be left out.
        tq.quantize_dynamic(state.model, dict.fromkeys(names, qconfig), dtype=torch.qint8, inplace=True)


class TorchaoQuantizer(Quantizer):
    """Base for torchao `quantize_` configs, restricted to the target layers."""

    def config(self) -> Any:
        raise NotImplementedError

    def accepts(self, module: nn.Linear) -> bool:
        """Whether groups tile the input: otherwise torchao asserts (intx) or skips the layer (int4)."""
        group_size = getattr(self.params, "group_size", None)
        return group_size is None or module.in_features % group_size == 0

    def quantize(self, state: TrialState, names: list[str]) -> None:
        from torchao.quantization import quantize_

        wanted = set(names)
        quantize_(state.model, self.config(), filter_fn=lambda m, fqn: fqn in wanted and self.accepts(m))


@STRATEGIES.register("quant_int8_wo")
class Int8WeightOnly(TorchaoQuantizer):
    """torchao `Int8WeightOnlyConfig`: int8 weights with one scale per output row, float activations."""

    name = "quant_int8_wo"
    summary = "torchao int8 weight-only quantization (per-row scales)"

    def config(self) -> Any:
        from torchao.quantization import Int8WeightOnlyConfig

        # No inductor tuning: the workloads run eagerly, and it edits global torch settings.
        return Int8WeightOnlyConfig(set_inductor_config=False)


def int4_config(group_size: int, packing: str) -> Any:
    from torchao.quantization import Int4WeightOnlyConfig

    return Int4WeightOnlyConfig(group_size=group_size, int4_packing_format=packing, set_inductor_config=False)


@functools.cache
def int4_failure(device: str, group_size: int, packing: str) -> str | None:
    """Quantize and run one small bfloat16 Linear on `device`; None if it works, else the error."""
    from torchao.quantization import quantize_

    layer = nn.Sequential(nn.Linear(group_size, 16, dtype=torch.bfloat16, device=device))
    try:
        quantize_(layer, int4_config(group_size, packing))
        layer(torch.ones(1, group_size, dtype=torch.bfloat16, device=device))
    except Exception as exc:  # a probe: whatever stops it is the reason
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
    return None


@STRATEGIES.register("quant_int4_wo")
class Int4WeightOnly(TorchaoQuantizer):
    """torchao `Int4WeightOnlyConfig`: 4-bit weights packed two per byte, bf16 scales/zeros per group.

    The model is cast to bfloat16 first, as the int4 kernels require. Layers whose input
    size is not a multiple of `group_size` stay in bfloat16 (`quantized_layers` counts the
    rest). With torchao 0.18 no int4 layout runs on CPU; the row says exactly why (the
    probe quantizes one small Linear). For 4-bit accuracy on CPU see `quant_intx_wo`.

    The tinygemm layout pads every weight to in_features % 1024 == 0 and out_features % 8 == 0
    before packing, and the byte columns count the padded storage: on small layers int4 is
    larger than bfloat16 (llama-tiny's 14 layers: 589,824 bytes against 147,456 in bf16,
    measured on an H200).
    """

    name = "quant_int4_wo"
    summary = "torchao int4 weight-only quantization (group-wise; CUDA only with torchao 0.18)"
    Params = Int4Params
    metrics = (*Quantizer.metrics, DTYPE)

    def skip_reason(self, cfg: TrialConfig) -> str | None:
        if cfg.device == "cuda":
            return None  # probing would create a CUDA context in the sweep's parent process
        failures = {p: int4_failure(cfg.device, self.params.group_size, p) for p in get_args(Int4Packing)}
        if failures[self.params.packing] is None:
            return None
        import torchao

        detail = "; ".join(f"{p}: {err or 'works'}" for p, err in failures.items())
        return (
            f"torchao {torchao.__version__} Int4WeightOnlyConfig cannot run on {cfg.device} ({detail}); "
            "quant_intx_wo(bits=4) gives 4-bit accuracy there, stored one value per int8 byte"
        )

    def config(self) -> Any:
        return int4_config(self.params.group_size, self.params.packing)

    def quantize(self, state: TrialState, names: list[str]) -> None:
        state.model.to(torch.bfloat16)
        super().quantize(state, names)
        state.metrics["dtype"] = "bfloat16"


@STRATEGIES.register("quant_intx_wo")
class IntxWeightOnly(TorchaoQuantizer):
    """torchao `IntxWeightOnlyConfig`: 1-8 bit weights, group-wise scales, runs on CPU.

    Its only layout without extra native kernels (`unpacked_to_int8`) stores each value in
    a whole int8 byte, so at 4 bits it gives int4 accuracy but int8 storage: the sizes
    recorded say so rather than pretending to 4 bits.
    """

    name = "quant_intx_wo"
    summary = "torchao intx weight-only quantization (accuracy of 1-8 bits; values stored one per int8)"
    Params = IntxParams

    def config(self) -> Any:
        from torchao.quantization import IntxWeightOnlyConfig
        from torchao.quantization.granularity import PerGroup

        return IntxWeightOnlyConfig(weight_dtype=getattr(torch, f"int{self.params.bits}"), granularity=PerGroup(self.params.group_size))


class Cast(Strategy):
    """Base for whole-model dtype casts: parameters and floating buffers."""

    aspect = Aspect.MODEL
    order = 40  # last: quantizers and SVD expect the original float32
    workloads = frozenset({"infer", "transfer"})
    exclusive = "dtype cast"
    dtype: torch.dtype
    metrics = (DTYPE,)

    def apply(self, state: TrialState) -> None:
        if any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in state.model.modules()):
            # Known before any forward: the row says so instead of failing in the first matmul.
            raise SkipTrial(f"{self.name}: torch.ao dynamic quantized Linear accepts float32 activations only")
        state.model.to(self.dtype)
        state.metrics["dtype"] = str(self.dtype).removeprefix("torch.")


@STRATEGIES.register("cast_fp16")
class CastFp16(Cast):
    """The seed document's `model.half()` (which is `model.to(torch.float16)`)."""

    name = "cast_fp16"
    summary = "cast the whole model to float16 (model.half())"
    dtype = torch.float16
    metrics = (DTYPE, Metric("kernel_note", str, column="kernel_note", doc="why float16 compute is slow on this CPU"))

    def apply(self, state: TrialState) -> None:
        super().apply(state)
        on_cpu = next(state.model.parameters()).device.type == "cpu"
        if on_cpu and (reason := slow_fp16_reason()):
            state.metrics["kernel_note"] = reason


@STRATEGIES.register("cast_bf16")
class CastBf16(Cast):
    """The same cast to bfloat16: fp32's exponent range with 8 mantissa bits."""

    name = "cast_bf16"
    summary = "cast the whole model to bfloat16"
    dtype = torch.bfloat16

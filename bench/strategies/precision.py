"""Precision of a step: `autocast(dtype=bf16|fp16)` (mixed precision) and `half` (the seed's `model.half()`).

What each does to the bytes DDP moves: DDP all-reduces gradients in the parameters' dtype.
autocast runs matmuls in bf16 or fp16 but keeps fp32 parameters, so the gradients, and
the all-reduce, stay fp32: the baseline's bytes. `half` makes the parameters and so the
gradients fp16: half the bytes. Neither needs a cost-model adapter of its own: DDP's
(`ddp.ddp_analytic_ops`, which a train step's model always comes from) reads the
gradients' dtype off the model after this aspect, and a test checks the measured bytes
of both against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from bench.contracts import TrialConfig
from bench.strategies import STRATEGIES
from bench.strategies.base import Aspect, Strategy, TrialState
from bench.strategies.metrics import Metric
from bench.system import NATIVE_FP16_FLAGS, cpu_flags

POLICY = "precision setting"  # exclusive group: one numeric policy per trial
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_fp16_reason(flags: frozenset[str]) -> str | None:
    """Why fp16 autocast is not measured on a CPU with `flags`; None where it has native fp16.

    torch runs CPU fp16 autocast anyway, through reference kernels: on a Xeon with
    avx512_bf16 but no avx512_fp16 (one thread, a shared machine), a 512x512 fp16 matmul
    took 27-37x as long as fp32 (bf16: 0.4x) and a gpt2-tiny forward+backward under fp16
    autocast 11-19x, so such a row would time the fallback, not fp16.
    """
    if flags & NATIVE_FP16_FLAGS:
        return None
    return (
        "this CPU has no native fp16 arithmetic (no avx512_fp16 or amx_fp16 flag): torch's CPU fp16 autocast "
        "falls back to reference kernels many times slower than fp32, so the row would time the fallback; "
        "fp16 autocast runs on CUDA"
    )


@dataclass(kw_only=True, slots=True, frozen=True)
class AutocastParams:
    dtype: Literal["bf16", "fp16"] = "bf16"


@STRATEGIES.register("autocast")
class Autocast(Strategy):
    """`torch.autocast`: eligible ops (matmuls, convolutions) run in bf16 or fp16; weights stay fp32.

    Training in fp16 also scales the loss (`torch.amp.GradScaler`), as torch's AMP recipe
    does: fp16's 5 exponent bits would flush small gradients to zero. bf16 has fp32's
    range and needs no scaler. The scaler's last scale is kept in the metrics.
    """

    name = "autocast"
    summary = "torch.autocast in bf16 (CPU, CUDA) or fp16 (CUDA, with a GradScaler in training): fp32 weights, so DDP's gradient bytes are the baseline's"
    aspect = Aspect.PRECISION
    Params = AutocastParams
    workloads = frozenset({"train", "infer"})
    exclusive = POLICY
    metrics = (Metric("grad_scale", float, doc="fp16 training: the GradScaler's last scale"),)

    def skip_reason(self, cfg: TrialConfig) -> str | None:
        if self.params.dtype == "fp16" and cfg.device == "cpu":
            return cpu_fp16_reason(cpu_flags())
        return None

    def apply(self, state: TrialState) -> None:
        state.autocast_dtype = DTYPES[self.params.dtype]
        if self.params.dtype == "fp16" and state.cfg.workload == "train":
            state.grad_scaler = torch.amp.GradScaler(state.env.device.type)

    def finish(self, state: TrialState) -> None:
        if state.grad_scaler is not None:
            state.metrics["grad_scale"] = float(state.grad_scaler.get_scale())


@STRATEGIES.register("half")
class Half(Strategy):
    """The seed's `model.half()` for training: parameters, activations, gradients and optimizer state in fp16.

    No loss scaling and no fp32 master weights (that is autocast's recipe): DDP all-reduces
    fp16 gradients, half the baseline's bytes. torch does not refuse it, on CPU either, but
    AdamW at its default eps=1e-8 diverges: 1e-8 rounds to 0 in fp16, and so does the
    square of any gradient under ~1.7e-4, so wherever the second moment is 0 the update
    divides by zero. Measured on gpt2-tiny: the first loss is finite, every later one NaN
    (with eps=1e-4, or SGD, it trains). The rows keep what happened: the losses as they
    are, and `nonfinite_params`, the parameter tensors holding a NaN or inf at the end.
    """

    name = "half"
    summary = "the seed's `model.half()` for training: fp16 weights and gradients, so DDP all-reduces half the bytes; no loss scaling (AdamW's default eps rounds to 0 in fp16, so training diverges)"
    aspect = Aspect.PRECISION
    workloads = frozenset({"train"})
    exclusive = POLICY
    metrics = (Metric("nonfinite_params", int, "tensors", doc="parameter tensors holding a NaN or inf at the end"),)

    def apply(self, state: TrialState) -> None:
        state.model.half()

    def finish(self, state: TrialState) -> None:
        state.metrics["nonfinite_params"] = sum(not bool(torch.isfinite(p).all()) for p in state.model.parameters())

"""Gradient compression as DDP communication hooks (torch's own where torch has one).

torch ships fp16/bf16 casts and PowerSGD; top-k, sign and QSGD are commbench's own hooks
(`hooks.py`, over the codecs of `codecs.py`), and `powersgd.py` makes torch's PowerSGD
hook safe on gloo. Each strategy states its whole-step cost model through an adapter that
feeds `bench.comm.cost_model` numbers read off the trial; measured bytes are tested
against it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from bench.comm.cost_model import batched_powersgd_step, gathered_payloads, powersgd_step, warmup_mix
from bench.contracts import TrialConfig
from bench.errors import SkipTrial
from bench.models.zoo import grad_bytes
from bench.strategies import STRATEGIES
from bench.strategies.base import Phase, Strategy, TrialState
from bench.strategies.ddp import ddp_analytic_ops
from bench.strategies.grad_compression import hooks as ch
from bench.strategies.grad_compression.powersgd import PowerSGDHookState, register_powersgd

Hook = Callable[[Any, Any], Any]


class CommHookStrategy(Strategy):
    """Base for strategies that register one DDP comm hook on the wrapped model."""

    phase = Phase.COMM
    workloads = frozenset({"train"})
    exclusive = "DDP comm hook"
    needs_ddp = True
    # The dtype the hook's all_reduce must carry; the train workload fails the trial if the
    # flight recorder shows anything else (an old C++ fp16 hook once sent fp32, PR #63375).
    wire_dtype: str | None = None

    def make_hook(self, state: TrialState) -> tuple[Any, Hook]:
        """Return (hook state, hook function) for `DistributedDataParallel.register_comm_hook`."""
        raise NotImplementedError

    def apply(self, state: TrialState) -> None:
        if state.wrapper != "ddp":
            raise RuntimeError(f"{self.name} needs DDP, but the model is wrapped by {state.wrapper}")
        hook_state, hook = self.make_hook(state)
        state.train_module.register_comm_hook(hook_state, hook)
        state.comm_hook = self.name
        state.comm_hook_state = hook_state


@STRATEGIES.register("fp16_compress", aliases=("ddp_fp16_hook",))
class Fp16Compress(CommHookStrategy):
    """torch's `fp16_compress_hook`: cast each bucket to fp16, all-reduce, cast back."""

    name = "fp16_compress"
    summary = "torch's `fp16_compress_hook`: exactly 0.5x the all-reduce bytes; the trial fails if the recorded dtype is not float16 (cf. pytorch PR #63375)"
    wire_dtype = "float16"

    def make_hook(self, state: TrialState) -> tuple[Any, Hook]:
        return None, default_hooks.fp16_compress_hook

    def analytic_ops(self, state: TrialState) -> dict[str, float] | None:
        return ddp_analytic_ops(state, wire_dtype_bytes=2)


@STRATEGIES.register("bf16_compress")
class Bf16Compress(CommHookStrategy):
    """torch's `bf16_compress_hook`: like fp16 but bfloat16 (fp32's range, 8 mantissa bits).

    Skipped off CUDA. gloo long could not all-reduce bfloat16 at all ("Invalid scalar
    type", pytorch #111131); on torch 2.13 CPU gloo does reduce bf16 tensors (measured:
    correct to bf16 rounding at 2-4 ranks), but DDP itself refuses this hook unless the
    process group is NCCL >= 2.10 on CUDA >= 11 (`DistributedDataParallel._check_comm_hook`:
    "BF16 all reduce communication hook required CUDA 11+ and NCCL 2.10+"). Renaming the
    hook to slip past that check would measure something torch does not support, so the
    row says why instead; it never quietly sends fp32.
    """

    name = "bf16_compress"
    summary = "torch's `bf16_compress_hook`: gradients all-reduced in bfloat16; CUDA/NCCL only, `skipped` on gloo with the reason (see below)"
    wire_dtype = "bfloat16"

    def skip_reason(self, cfg: TrialConfig) -> str | None:
        if cfg.device != "cuda":
            return (
                "DDP accepts bf16_compress_hook only with CUDA 11+ and NCCL 2.10+ (gloo can reduce bf16 "
                "CPU tensors on torch 2.13, but DDP._check_comm_hook refuses the hook)"
            )
        return None

    def make_hook(self, state: TrialState) -> tuple[Any, Hook]:
        return None, default_hooks.bf16_compress_hook

    def apply(self, state: TrialState) -> None:
        try:
            super().apply(state)
        except TypeError as exc:  # DDP's own refusal (old NCCL/CUDA): a reason, not a failure
            raise SkipTrial(str(exc)) from None

    def analytic_ops(self, state: TrialState) -> dict[str, float] | None:
        return ddp_analytic_ops(state, wire_dtype_bytes=2)


def bucket_numels(ddp: nn.Module) -> list[int]:
    """Elements in each of DDP's current gradient buckets (after its first-iteration rebuild).

    A layout fact the cost models need; DDP exposes it only through its reducer.
    """
    return [b.buffer().numel() for b in ddp.reducer._get_zeros_like_grad_buckets()]  # type: ignore[attr-defined]


def with_gradient_ops(state: TrialState, ops: dict[str, float]) -> dict[str, float]:
    """DDP's step model with the gradient all_reduce replaced by a hook's `ops`."""
    base = ddp_analytic_ops(state)
    base.pop("all_reduce", None)
    return {**{op: b for op, b in ops.items() if b}, **base}


# --- PowerSGD ---------------------------------------------------------------------


@dataclass(kw_only=True, slots=True, frozen=True)
class PowerSGDParams:
    rank: int = 4  # matrix_approximation_rank
    start_iter: int = 2  # plain all_reduce before this iteration (torch's default, 1000, hides the hook)
    error_feedback: bool = True
    warm_start: bool = True
    batched: bool = False  # batched_powerSGD_hook: one square matrix per bucket
    min_compression_rate: float = 2.0

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError("rank must be >= 1")
        if self.start_iter < 1:
            raise ValueError("start_iter must be >= 1")
        if self.start_iter < 2 and (self.error_feedback or self.warm_start):
            # PowerSGDState refuses it too: DDP rebuilds its buckets after iteration 0, which
            # would invalidate per-bucket error and warm-start memory.
            raise ValueError("start_iter must be >= 2 when error_feedback or warm_start is on")
        if self.min_compression_rate <= 0:
            raise ValueError("min_compression_rate must be > 0")


@STRATEGIES.register("powersgd")
class PowerSGD(CommHookStrategy):
    """torch's `powerSGD_hook` (or `batched_powerSGD_hook`), made safe on gloo by `register_powersgd`.

    Each gradient, viewed as n x m, is all-reduced as P (n x r') and Q (m x r'), r' =
    min(n, m, rank), when that pays (`min_compression_rate`); 1-D tensors go uncompressed.
    Steps before `start_iter` are plain fp32 all-reduces; the cost model averages both
    over the measured window. Rank 0's `compression_stats()` are kept in the metrics.
    """

    name = "powersgd"
    summary = "torch's `powerSGD_hook` / `batched_powerSGD_hook`: rank-r P/Q all-reduces per gradient matrix, made safe on gloo (see below)"
    Params = PowerSGDParams
    wire_dtype = "float32"

    def apply(self, state: TrialState) -> None:  # registers through register_powersgd, not make_hook
        if state.wrapper != "ddp":
            raise RuntimeError(f"{self.name} needs DDP, but the model is wrapped by {state.wrapper}")
        p = self.params
        hook_state = register_powersgd(
            state.train_module,
            matrix_approximation_rank=p.rank,
            start_powerSGD_iter=p.start_iter,
            batched=p.batched,
            use_error_feedback=p.error_feedback,
            warm_start=p.warm_start,
            min_compression_rate=p.min_compression_rate,
            random_seed=state.cfg.seed,
        )
        state.comm_hook, state.comm_hook_state = self.name, hook_state

    def finish(self, state: TrialState) -> None:
        hook_state: PowerSGDHookState = state.comm_hook_state
        rate, before, after = hook_state.compression_stats()
        state.metrics.update(
            powersgd_iter=hook_state.powersgd.iter,
            powersgd_compression_rate=rate,
            powersgd_numel_before=before,
            powersgd_numel_after=after,
        )

    def compressed_elements(self, state: TrialState) -> int:
        """Elements all-reduced per compressed step (the cost model)."""
        if self.params.batched:
            return batched_powersgd_step(bucket_numels(state.train_module), self.params.rank)
        shapes = [tuple(q.shape) for q in state.model.parameters() if q.requires_grad]
        return powersgd_step(shapes, self.params.rank, self.params.min_compression_rate)

    def analytic_ops(self, state: TrialState) -> dict[str, float] | None:
        cfg = state.cfg
        compressed = 4.0 * self.compressed_elements(state)  # P, Q and uncompressed go in fp32
        mean = warmup_mix(compressed, grad_bytes(state.model), start_iter=self.params.start_iter,
                          warmup=cfg.warmup_steps, steps=cfg.steps)  # fmt: skip
        return with_gradient_ops(state, {"all_reduce": mean})


# --- commbench's own codecs: top-k, sign, QSGD -----------------------------------------


class CodecStrategy(CommHookStrategy):
    """A codec from `bench.strategies.grad_compression.hooks`: one all_gather of packed payloads per bucket.

    The codec dataclass (`ch.TopK`, `ch.Sign`, `ch.QSGD`) is the strategy's Params: its
    fields are the strategy's parameters and it validates them.
    """

    def make_hook(self, state: TrialState) -> tuple[Any, Hook]:
        return ch.CompressionState(codec=self.params, seed=state.cfg.seed), ch.compression_hook

    def finish(self, state: TrialState) -> None:
        state.metrics["hook_payload_bytes_sent"] = state.comm_hook_state.payload_bytes_sent

    def analytic_ops(self, state: TrialState) -> dict[str, float] | None:
        payload = self.params.payload_bytes
        gathered = gathered_payloads(bucket_numels(state.train_module), payload, state.env.world_size)
        return with_gradient_ops(state, {"all_gather": gathered})


@STRATEGIES.register("topk")
class TopKStrategy(CodecStrategy):
    """Top-k sparsification: float32 values + int32 indices of the ceil(ratio*n) largest per bucket."""

    name = "topk"
    summary = "per bucket: ceil(ratio·n) float32 values + int32 indices, all-gathered; error-feedback residual per bucket"
    Params = ch.TopK


@STRATEGIES.register("signsgd")
class SignSGD(CodecStrategy):
    """1-bit signs packed 8 per byte plus a float32 scale (mean |x| when scaled) per bucket (EF-SignSGD)."""

    name = "signsgd"
    summary = "EF-SignSGD: signs packed 8 per byte + one float32 scale per bucket, all-gathered (see the EF finding below)"
    Params = ch.Sign


@STRATEGIES.register("qsgd")
class QSGDStrategy(CodecStrategy):
    """QSGD stochastic quantization: a float32 norm + signed integer levels per bucket."""

    name = "qsgd"
    summary = "stochastic quantization to ±levels in the narrowest integer dtype (int8 up to 127) + a float32 norm, all-gathered"
    Params = ch.QSGD

"""Gradient compression as DDP communication hooks (torch's own where torch has one).

torch ships fp16/bf16 casts and PowerSGD; top-k, sign and QSGD are commbench's own hooks
(`hooks.py`, over the codecs of `codecs.py`), and `powersgd.py` makes torch's PowerSGD
hook safe on gloo. Each strategy states its whole-step cost model through an adapter that
feeds `bench.comm.cost_model` numbers read off the trial; measured bytes are tested
against it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from bench.comm.cost_model import batched_powersgd_step, gathered_payloads, powersgd_step, warmup_mix
from bench.errors import SkipTrial
from bench.models.zoo import grad_bytes, grad_dtype_bytes
from bench.strategies import STRATEGIES
from bench.strategies.base import Aspect, Strategy, TrialState
from bench.strategies.ddp import ddp_analytic_ops
from bench.strategies.grad_compression import hooks as ch
from bench.strategies.grad_compression.powersgd import PowerSGDHookState, bucket_group_hook, on_group, powersgd_state
from bench.strategies.grad_compression.replay import Recording, recorded_hook, replay
from bench.strategies.metrics import Metric

Hook = Callable[[Any, Any], Any]


class CommHookStrategy(Strategy):
    """Base for strategies that register one DDP comm hook on the wrapped model.

    The hook is registered through `replay.Recording`, which keeps the last step's buckets;
    `finish` replays them on this rank's own group to time the codec apart from the link
    (`replay.py`): the `codec_s_per_step` column.
    """

    aspect = Aspect.COMM
    workloads = frozenset({"train"})
    exclusive = "DDP comm hook"
    needs_ddp = True
    # The dtype the hook's all_reduce must carry; the train workload fails the trial if the
    # flight recorder shows anything else (an old C++ fp16 hook once sent fp32, PR #63375).
    wire_dtype: str | None = None
    metrics = (
        Metric("codec_s_per_step", float, "s/step", column="codec_s_per_step",
               doc="the hook's last-step buckets replayed on a one-rank group, less a plain all_reduce of them",
               null_reason="the hook saw no bucket"),  # fmt: skip
        Metric("codec_hook_s_per_step", float, "s/step", doc="that replay through the hook (median of the rounds)"),
        Metric("codec_plain_s_per_step", float, "s/step", doc="that replay through a plain all_reduce (median)"),
        Metric("codec_elements", int, "elements", column="codec_elements", doc="gradient elements in those buckets"),
    )

    def make_hook(self, state: TrialState) -> tuple[Any, Hook]:
        """Return (hook state, hook function) for `DistributedDataParallel.register_comm_hook`."""
        raise NotImplementedError

    def replay_hook(self, rec: Recording, group: Any) -> tuple[Any, Hook]:
        """(state, hook) that run the recorded hook on `group`, leaving the run's own state as it is.

        The default fits a hook whose state is its process group (torch's fp16 and bf16 casts).
        """
        return group, rec.hook

    def apply(self, state: TrialState) -> None:
        if state.wrapper != "ddp":
            raise RuntimeError(f"{self.name} needs DDP, but the model is wrapped by {state.wrapper}")
        hook_state, hook = self.make_hook(state)
        ddp = state.train_module
        ddp._check_comm_hook(hook)  # DDP's own checks of the hook (its name, for bf16 on old NCCL), not the wrapper's
        rec = Recording(hook_state, hook)
        ddp.register_comm_hook(rec, recorded_hook)
        state.comm_hook, state.comm_hook_state, state.comm_hook_recording = self.name, hook_state, rec

    def finish(self, state: TrialState) -> None:
        rec: Recording = state.comm_hook_recording
        got = replay(rec, lambda group: self.replay_hook(rec, group))
        state.metrics.update(
            codec_s_per_step=got.codec_s if got else None,
            codec_hook_s_per_step=got.hook_s if got else None,
            codec_plain_s_per_step=got.plain_s if got else None,
            codec_elements=got.elements if got else None,
        )


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
    """Gradients all-reduced in bfloat16 (fp32's range, 8 mantissa bits): torch's hook on NCCL, its math on gloo.

    On NCCL this is torch's `bf16_compress_hook`. DDP refuses that hook by name unless the
    process group is NCCL >= 2.10 on CUDA 11+ (`DistributedDataParallel._check_comm_hook`),
    though gloo on torch 2.13 does reduce bfloat16 CPU tensors (gloo long could not:
    "Invalid scalar type", pytorch #111131). So on gloo the same arithmetic runs through
    `hooks.bf16_cast_hook`, which mirrors torch's hook statement for statement (cast,
    divide by the group size in bf16, all_reduce, copy back); a test checks its result
    against torch's arithmetic done by hand. Which one ran is in the metrics (`bf16_hook`).
    The trial fails if the flight recorder sees anything but bfloat16 all-reduces.
    """

    name = "bf16_compress"
    summary = "gradients all-reduced in bfloat16: torch's `bf16_compress_hook` on NCCL, the same math under a name DDP allows on gloo"
    wire_dtype = "bfloat16"
    metrics = (*CommHookStrategy.metrics, Metric("bf16_hook", str, doc="the hook that ran: torch's on NCCL, commbench's cast hook on gloo"))

    def make_hook(self, state: TrialState) -> tuple[Any, Hook]:
        hook = default_hooks.bf16_compress_hook if state.env.backend == "nccl" else ch.bf16_cast_hook
        state.metrics["bf16_hook"] = f"{hook.__module__}.{hook.__qualname__}"
        return None, hook

    def apply(self, state: TrialState) -> None:
        try:
            super().apply(state)
        except TypeError as exc:  # DDP's own refusal (NCCL < 2.10, CUDA < 11): a reason, not a failure
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
    """torch's `powerSGD_hook` (or `batched_powerSGD_hook`), made safe on gloo by `bucket_group_hook`.

    Each gradient, viewed as n x m, is all-reduced as P (n x r') and Q (m x r'), r' =
    min(n, m, rank), when that pays (`min_compression_rate`); 1-D tensors go uncompressed.
    Steps before `start_iter` are plain fp32 all-reduces; the cost model averages both
    over the measured window. Rank 0's `compression_stats()` are kept in the metrics.
    """

    name = "powersgd"
    summary = "torch's `powerSGD_hook` / `batched_powerSGD_hook`: rank-r P/Q all-reduces per gradient matrix, made safe on gloo (one process group per bucket)"
    Params = PowerSGDParams
    wire_dtype = "float32"
    metrics = (
        *CommHookStrategy.metrics,
        Metric("powersgd_iter", int, "iterations", doc="rank 0's PowerSGD iteration count at the end"),
        Metric("powersgd_compression_rate", float, "ratio", doc="elements before / after compression (compression_stats)"),
        Metric("powersgd_numel_before", int, "elements", doc="elements the compressed tensors had"),
        Metric("powersgd_numel_after", int, "elements", doc="elements their P and Q have"),
    )

    def make_hook(self, state: TrialState) -> tuple[Any, Hook]:
        p = self.params
        hook_state = powersgd_state(
            matrix_approximation_rank=p.rank,
            start_powerSGD_iter=p.start_iter,
            batched=p.batched,
            use_error_feedback=p.error_feedback,
            warm_start=p.warm_start,
            min_compression_rate=p.min_compression_rate,
            random_seed=state.cfg.seed,
        )
        return hook_state, bucket_group_hook

    def replay_hook(self, rec: Recording, group: Any) -> tuple[Any, Hook]:
        return on_group(rec.state, group), rec.state.hook  # torch's hook itself: one bucket at a time needs no bucket groups

    def finish(self, state: TrialState) -> None:
        super().finish(state)
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
        # P, Q and the uncompressed tensors go in the gradients' dtype (the hook allocates them like the bucket).
        compressed = float(grad_dtype_bytes(state.model) * self.compressed_elements(state))
        mean = warmup_mix(compressed, grad_bytes(state.model), start_iter=self.params.start_iter,
                          warmup=cfg.warmup_steps, steps=cfg.steps)  # fmt: skip
        return with_gradient_ops(state, {"all_reduce": mean})


# --- commbench's own codecs: top-k, sign, QSGD -----------------------------------------


class CodecStrategy(CommHookStrategy):
    """A codec from `bench.strategies.grad_compression.hooks`: one all_gather of packed payloads per bucket.

    The codec dataclass (`ch.TopK`, `ch.Sign`, `ch.QSGD`) is the strategy's Params: its
    fields are the strategy's parameters and it validates them.
    """

    metrics = (*CommHookStrategy.metrics, Metric("hook_payload_bytes_sent", int, "B", doc="this rank's packed payloads, summed over calls"))

    def make_hook(self, state: TrialState) -> tuple[Any, Hook]:
        return ch.CompressionState(codec=self.params, seed=state.cfg.seed), ch.compression_hook

    def replay_hook(self, rec: Recording, group: Any) -> tuple[Any, Hook]:
        return dataclasses.replace(rec.state, process_group=group), rec.hook  # its own counters; the same residuals

    def finish(self, state: TrialState) -> None:
        super().finish(state)
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
    """Signs packed 8 per byte (+ a nonzero bit-plane by default) plus a float32 scale (mean |x| when scaled) per bucket (EF-SignSGD)."""

    name = "signsgd"
    summary = "EF-SignSGD: signs packed 8 per byte, a nonzero bit-plane (zeros=zero; exact zeros decode to 0) and one float32 scale per bucket, all-gathered"
    Params = ch.Sign


@STRATEGIES.register("qsgd")
class QSGDStrategy(CodecStrategy):
    """QSGD stochastic quantization: a float32 norm + signed integer levels per bucket."""

    name = "qsgd"
    summary = "stochastic quantization to ±levels in the narrowest integer dtype (int8 up to 127) + a float32 norm, all-gathered"
    Params = ch.QSGD

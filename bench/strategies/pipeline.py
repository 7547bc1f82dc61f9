"""Pipeline parallelism with `torch.distributed.pipelining`: the model split layer-wise into stages.

Each rank holds one stage (two or more with the interleaved schedule): the first holds the
embeddings, the last the final norm and the head, and the blocks (`ModelSpec.blocks`) are
split as evenly as they go. A step splits the batch into `microbatches` and runs the
schedule (GPipe, 1F1B or Interleaved1F1B); each stage boundary carries the micro-batch's
activations forward and their gradients back (`cost_model.pipeline_ops`, per rank).

The LM head is tied to the input embedding in every causal model here. With the two on
different ranks, the last stage holds its own copy, and after every backward the first and
last stages all-reduce their two gradients of it (Megatron's embedding group), so both
copies stay equal: one more all_reduce of vocab x hidden on those two ranks.

The measured bubble is each stage's idle share of its step: 1 - (time inside its own
forward and backward chunks) / step time, next to the analytic (p - 1) / (m + p - 1)
of GPipe and 1F1B ((p - 1) / (v m + p - 1) interleaved over v stages per rank).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from bench.comm.cost_model import pipeline_ops
from bench.contracts import Parallel, TrialConfig
from bench.errors import BenchError
from bench.models.zoo import ModelSpec
from bench.strategies import STRATEGIES
from bench.strategies.base import Aspect, Strategy, TrialState
from bench.strategies.ddp import LAYOUT
from bench.strategies.metrics import Metric

Schedule = Literal["gpipe", "1f1b", "interleaved"]


@dataclass(kw_only=True, slots=True, frozen=True)
class PipelineParams:
    schedule: Schedule = "1f1b"
    microbatches: int = 4
    virtual: int = 2  # stages per rank with the interleaved schedule

    def __post_init__(self) -> None:
        if self.microbatches < 1:
            raise ValueError("microbatches must be >= 1")
        if self.virtual < 1:
            raise ValueError("virtual must be >= 1")

    def stages_per_rank(self) -> int:
        return self.virtual if self.schedule == "interleaved" else 1


class Stage(nn.Module):
    """One stage of a causal LM: [embeddings] + a run of blocks + [final norm and head]."""

    def __init__(self, model: nn.Module, spec: ModelSpec, start: int, end: int, *, first: bool, last: bool) -> None:
        super().__init__()
        base = model.transformer if spec.family == "gpt2" else model.model
        self.family, self.config = spec.family, base.config
        self.embed = (base.wte if spec.family == "gpt2" else base.embed_tokens) if first else None
        self.positions = base.wpe if first and spec.family == "gpt2" else None
        self.rotary = getattr(base, "rotary_emb", None)
        self.blocks = nn.ModuleList(list(spec.blocks(model))[start:end])
        self.norm = (base.ln_f if spec.family == "gpt2" else base.norm) if last else None
        self.head = model.lm_head if last else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from transformers.masking_utils import create_causal_mask

        h = self.embed(x) if self.embed is not None else x
        pos = torch.arange(h.shape[1], device=h.device)[None]
        if self.positions is not None:
            h = h + self.positions(pos)
        mask = create_causal_mask(config=self.config, inputs_embeds=h, attention_mask=None, cache=None, position_ids=pos)
        if self.family == "gpt2":
            for block in self.blocks:
                h = block(h, None, mask, position_ids=pos)
        else:
            rope = self.rotary(h, position_ids=pos)
            for block in self.blocks:
                h = block(h, attention_mask=mask, position_ids=pos, position_embeddings=rope)
        if self.head is not None:
            h = self.head(self.norm(h))
        return h


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The loss HF's causal LMs compute from `labels`: next-token cross-entropy, -100 ignored."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)


def split_blocks(n_blocks: int, n_stages: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) runs of blocks per stage, as even as they go (earlier stages get the extra)."""
    if n_blocks < n_stages:
        raise BenchError(f"pipeline: {n_stages} stages need at least as many blocks, the model has {n_blocks}")
    size, extra = divmod(n_blocks, n_stages)
    bounds, start = [], 0
    for i in range(n_stages):
        end = start + size + (1 if i < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


class ChunkTimer:
    """Time spent inside a stage's forward and backward chunks, i.e. not idle."""

    def __init__(self, stages: list[Any]) -> None:
        self.busy_s = 0.0
        for stage in stages:
            for name in ("forward_one_chunk", "backward_one_chunk"):
                setattr(stage, name, self._timed(getattr(stage, name)))

    def _timed(self, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.busy_s += time.perf_counter() - t0

        return wrapper


Steps = list[tuple[float, float]]  # (busy, wall) per step


def apply_pipeline(state: TrialState, params: PipelineParams) -> tuple[dict[str, Any], Steps]:
    """Build this rank's stage(s), the schedule, and the step and eval functions the train loop calls.

    Returns the cost model's shapes (`cost_model.pipeline_ops`) and the list each train step
    appends its (busy, wall) seconds to.
    """
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe, ScheduleInterleaved1F1B

    env, spec, model = state.env, state.spec, state.model
    p, v = env.world_size, params.stages_per_rank()
    n_stages = p * v
    bounds = split_blocks(len(spec.blocks(model)), n_stages)
    indices = [env.rank + k * p for k in range(v)]  # interleaved: rank r holds stages r, r+p, ...
    modules = [Stage(model, spec, *bounds[i], first=i == 0, last=i == n_stages - 1) for i in indices]
    stages = [PipelineStage(m, i, n_stages, env.device) for m, i in zip(modules, indices)]
    timer = ChunkTimer(stages)
    if params.schedule == "interleaved":
        schedule: Any = ScheduleInterleaved1F1B(stages, n_microbatches=params.microbatches, loss_fn=causal_lm_loss)
    else:
        cls = Schedule1F1B if params.schedule == "1f1b" else ScheduleGPipe
        schedule = cls(stages[0], n_microbatches=params.microbatches, loss_fn=causal_lm_loss)
    first, last = 0 in indices, n_stages - 1 in indices
    tied = [m.embed.weight for m in modules if m.embed is not None] + [m.head.weight for m in modules if m.head is not None]
    # Megatron's embedding group: the ranks holding the first and the last stage (every rank creates it).
    group = dist.new_group(sorted({0, (n_stages - 1) % p})) if p > 1 else None
    state.model = nn.ModuleList(modules)  # what the optimizer steps and what FSDP-style sizing sees
    state.wrapped, state.wrapper = state.model, f"pipeline:{params.schedule}"
    state.parallel = Parallel(dp=1, pp=p)
    state.data_rank = 0  # the first stage's inputs and the last stage's labels come from one batch
    state.metrics.update(pipeline_stages=n_stages, pipeline_microbatches=params.microbatches)
    activation = state.metrics["pipeline_activation"] = {
        "batch": state.cfg.batch_size, "seq": state.cfg.seq_len, "hidden": int(spec.config.hidden_size),
        "vocab": int(spec.config.vocab_size), "stages": n_stages, "ranks": p, "rank": env.rank,
    }  # fmt: skip
    steps: Steps = []

    def run(ids: torch.Tensor, labels: torch.Tensor, *, train: bool) -> torch.Tensor | None:
        losses: list[torch.Tensor] = []
        call = schedule.step if train else schedule.eval
        if first and last:
            call(ids, target=labels, losses=losses)
        elif first:
            call(ids)
        elif last:
            call(target=labels, losses=losses)
        else:
            call()
        return torch.stack(losses).mean().detach() if losses else None

    def train_batch(batch: Any) -> torch.Tensor | None:
        busy0, t0 = timer.busy_s, time.perf_counter()
        loss = run(batch.input_ids, batch.labels, train=True)
        if group is not None and (first or last):
            for weight in tied:  # one of the two copies of the tied embedding on this rank
                dist.all_reduce(weight.grad, group=group)
        steps.append((timer.busy_s - busy0, time.perf_counter() - t0))
        return loss

    def eval_batch(batch: Any) -> float | None:
        with torch.no_grad():
            loss = run(batch.input_ids.to(env.device), batch.labels.to(env.device), train=False)
        return None if loss is None else float(loss)

    state.train_batch, state.eval_batch = train_batch, eval_batch
    return activation, steps


@STRATEGIES.register("pipeline")
class Pipeline(Strategy):
    """Pipeline parallelism over every rank, GPipe / 1F1B / Interleaved1F1B with `microbatches` per step."""

    name = "pipeline"
    summary = "torch.distributed.pipelining: layer-wise stages, GPipe/1F1B/interleaved schedules, measured vs analytic bubble"
    aspect = Aspect.LAYOUT
    order = 10
    Params = PipelineParams
    workloads = frozenset({"train"})
    exclusive = LAYOUT
    replaces_ddp = True
    metrics = (
        Metric("pipeline_stages", int, "stages", doc="stages over all ranks"),
        Metric("pipeline_microbatches", int, "micro-batches", doc="micro-batches per step"),
        Metric("pipeline_activation", dict, doc="the shapes of the cost model (`cost_model.pipeline_ops`)"),
        Metric("pipeline_bubble_measured", float, "ratio", doc="this stage's idle share of its step, median over steps"),
        Metric("pipeline_bubble_analytic", float, "ratio", doc="(p - 1) / (v m + p - 1)"),
    )
    # Set by `apply`: the cost model's shapes, and each step's (busy, wall) seconds for `finish`.
    activation: dict[str, Any]
    steps: Steps

    def check(self, cfg: TrialConfig, others: list[str]) -> None:
        from bench.models.zoo import MODELS

        spec = MODELS.get(cfg.model)
        if spec.objective != "causal":
            raise BenchError(f"pipeline splits causal LMs (gpt2-*, llama-*); {cfg.model} is {spec.objective}")
        if "grad_accum" in others:
            raise BenchError("pipeline: its micro-batches are its accumulation; use pipeline(microbatches=...) not grad_accum")
        if cfg.batch_size % self.params.microbatches:
            raise BenchError(f"pipeline: batch_size {cfg.batch_size} must divide into {self.params.microbatches} microbatches")
        stages = cfg.world_size * self.params.stages_per_rank()
        split_blocks(spec.config.num_hidden_layers, stages)
        if self.params.schedule == "interleaved" and self.params.microbatches % cfg.world_size:
            raise BenchError(f"pipeline: the interleaved schedule needs microbatches divisible by the {cfg.world_size} ranks")

    def apply(self, state: TrialState) -> None:
        self.activation, self.steps = apply_pipeline(state, self.params)

    def finish(self, state: TrialState) -> None:
        measured = [1.0 - busy / wall for busy, wall in self.steps if wall > 0]
        p, m, v = state.env.world_size, self.params.microbatches, self.params.stages_per_rank()
        state.metrics["pipeline_bubble_measured"] = sorted(measured)[len(measured) // 2] if measured else None
        state.metrics["pipeline_bubble_analytic"] = (p - 1) / (v * m + p - 1)

    def analytic_ops(self, state: TrialState) -> dict[str, float] | None:
        return pipeline_ops(**self.activation)

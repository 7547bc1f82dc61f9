"""`train`: forward, backward and optimizer step of a language model under data parallelism."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from bench.comm.profile import profile_steps
from bench.contracts import Accuracy, Parallel, RankResult, TrialConfig
from bench.distributed.env import RankEnv
from bench.meters import phases
from bench.meters.memory import model_state_bytes
from bench.meters.window import Window
from bench.models.zoo import MODELS
from bench.strategies import Aspect, Composition, TrialState, effective
from bench.strategies.metrics import Metric
from bench.workloads import Workload, register
from bench.workloads.common import MODEL_METRICS, batches, build_state, evaluate, evaluate_loss, synthetic_protocol
from bench.workloads.sources import LMBatch, MarkovChain
from bench.workloads.text import corpus_split


@dataclass(kw_only=True, slots=True, frozen=True)
class TrainOptions:
    """`options.*` of the train workload.

    Error feedback (top-k, signSGD, QSGD) is analysed for SGD, whose step is linear in the
    gradient; Adam's per-element normalisation is not (the 1-bit Adam paper's point), so
    both are offered.

    `source = "corpus"` trains a pretrained causal LM on real text (bench/workloads/text.py):
    `corpus` names the text file as in infer (unset: WikiText-2 validation), and the row's
    convergence is held-out loss before (`eval_loss_before`) and after (`eval_loss`).
    """

    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = 0.9  # sgd only
    source: Literal["synthetic", "corpus"] = "synthetic"
    corpus: str | None = None  # source = corpus: a text file or "hub"; unset: WikiText-2 (bench/eval/corpus.py)

    def __post_init__(self) -> None:
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError("momentum must be in [0, 1)")


def analytic_ops(state: TrialState, comp: Composition) -> dict[str, float] | None:
    """Cost model of one optimizer step per rank (op -> bytes).

    A comm hook's model is the whole step's (it replaces DDP's all-reduce and keeps the
    rest), so the last COMM strategy with a model wins; otherwise every layout adds its own
    traffic (tensor parallel's activations plus FSDP's parameters on a 2-D mesh).
    """
    comm = [ops for s in comp.strategies if s.aspect == Aspect.COMM and (ops := s.analytic_ops(state)) is not None]
    if comm:
        return comm[-1]
    layouts = [ops for s in comp.strategies if s.aspect == Aspect.LAYOUT and (ops := s.analytic_ops(state)) is not None]
    if not layouts:
        return None
    total: dict[str, float] = {}
    for ops in layouts:
        for op, nbytes in ops.items():
            total[op] = total.get(op, 0.0) + nbytes
    return total


def check_wire_dtype(comp: Composition, records: list[dict[str, Any]], state: TrialState) -> None:
    """Fail the trial if a comm hook's all_reduce carried another dtype than it promises."""
    sent = sorted({r["dtype"] for r in records if r["op"] == "all_reduce" and r["dtype"].startswith(("float", "bfloat"))})
    state.metrics["all_reduce_dtypes"] = sent
    for s in comp.strategies:
        expected = getattr(s, "wire_dtype", None)
        if expected and records and sent != [expected]:
            raise RuntimeError(f"{s.name} should all-reduce {expected} but the flight recorder saw {sent}")


def _step(state: TrialState, optimizer: torch.optim.Optimizer, micro: list[LMBatch]) -> torch.Tensor | None:
    """One optimizer step over `micro` micro-batches; the layout syncs gradients on the last only.

    A layout that owns the step (pipeline parallel) runs each batch itself; its loss is None
    on ranks that do not compute one.
    """
    if state.train_batch is not None:
        (batch,) = micro  # such layouts reject grad_accum: their micro-batches are their own
        with state.autocast():
            total = state.train_batch(batch)
    else:
        module = state.train_module
        total = torch.zeros((), device=state.env.device)
        for j, b in enumerate(micro):
            with state.micro_step(last=j == len(micro) - 1), state.loss_scope():
                with state.autocast():
                    # .mean(): nn.DataParallel gathers one loss per GPU; a scalar stays itself.
                    loss = module(input_ids=b.input_ids, labels=b.labels).loss.mean() / len(micro)
                state.backward(loss)
            total += loss.detach()
    state.optimizer_step(optimizer)
    optimizer.zero_grad(set_to_none=True)
    return total


def make_optimizer(opts: TrainOptions, lr: float, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """AdamW, or SGD with momentum, at `lr`."""
    if opts.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=opts.momentum)
    return torch.optim.AdamW(params, lr=lr)


def run(cfg: TrialConfig, comp: Composition, env: RankEnv) -> RankResult:
    opts: TrainOptions = WORKLOAD.options(cfg)
    comp = effective(comp, cfg.workload)
    build_aspects = (Aspect.MODEL, Aspect.PRECISION, Aspect.LAYOUT, Aspect.COMM, Aspect.LOOP)
    total_steps = cfg.warmup_steps + cfg.steps + cfg.profile_steps
    chain: MarkovChain | None = None
    if opts.source == "corpus":
        from bench.models.pretrained import load_pretrained  # transformers' tokenizers only when needed

        model, tokenizer, _ = load_pretrained(MODELS.get(cfg.model).pretrained or "")
        state = build_state(cfg, comp, env, build_aspects, model=model)
        data_rank, data_world = _data_rank(state, env)
        text = corpus_split(cfg, opts.corpus, tokenizer, data_rank, data_world, total_steps * state.micro_steps)
        train, held_out = [b.to(env.device) for b in text.train], text.held_out
        before = _held_out_loss(state, held_out, env.device)
    else:
        state = build_state(cfg, comp, env, build_aspects)
        chain = MarkovChain.from_config(cfg.data)
        data_rank, _ = _data_rank(state, env)
        steps_k = total_steps * state.micro_steps
        train = [b.to(env.device) for b in batches(cfg, chain, state.spec.causal, "train", data_rank, steps_k)]
        held_out = batches(cfg, chain, state.spec.causal, "eval", 0, cfg.eval_batches)
    k = state.micro_steps
    optimizer = make_optimizer(opts, cfg.lr, state.train_module.parameters())
    losses: list[torch.Tensor | None] = []

    def step() -> None:
        i = len(losses)
        losses.append(_step(state, optimizer, train[i * k : (i + 1) * k]))

    window = Window(env.device, env.backend, track_comm=cfg.track_comm).measure(step, warmup=cfg.warmup_steps, steps=cfg.steps)
    if state.comm_invisible:
        window.comm_summary, window.comm_reason = None, state.comm_invisible
    check_wire_dtype(comp, window.comm_records, state)
    # Right after an optimizer step, before evaluation: an eval forward leaves FSDP2's root unsharded.
    held = model_state_bytes(list(state.train_module.parameters()), optimizer)
    state.metrics["model_state_bytes"] = held
    state.metrics["model_state_peak_bytes"] = held + state.metrics.get("unsharded_param_bytes", 0)
    # Warmup and window (the profiler pass's steps come after); None where this rank computes no loss.
    train_losses = None if any(x is None for x in losses) else [float(x) for x in losses if x is not None]
    if chain is not None:
        accuracy = evaluate(state.model, chain, held_out, env.device, loss_of=state.eval_batch)
        accuracy.protocol = synthetic_protocol(cfg, held_out)
    else:
        accuracy = _text_accuracy(before, _held_out_loss(state, held_out, env.device), text.protocol)
    # After the evaluation, so every strategy is evaluated after the same number of steps.
    if cfg.profile_steps:
        phases.mark("profile")
    profile = profile_steps(step, cfg.profile_steps, env.device)
    ops = analytic_ops(state, comp)
    comp.finish(state)
    return RankResult(
        rank=env.rank,
        window=window,
        tokens_per_step=cfg.batch_size * cfg.seq_len * k,
        accuracy=accuracy,
        metrics=dict(state.metrics),
        analytic_ops=ops,
        parallel=state.parallel or Parallel(dp=env.world_size),
        profile=profile,
        train_losses=train_losses,
    )


def _data_rank(state: TrialState, env: RankEnv) -> tuple[int, int]:
    """(this rank's data-parallel index, the data-parallel degree): a layout may feed several ranks one stream."""
    if state.data_rank is None:
        return env.rank, env.world_size
    return state.data_rank, state.parallel.dp if state.parallel else env.world_size


def _held_out_loss(state: TrialState, held_out: list[LMBatch], device: torch.device) -> float | None:
    """Mean loss over the held-out batches (None on ranks of a split layout that hold no loss)."""
    if not held_out:
        return None
    return evaluate_loss(state.model, held_out, device, loss_of=state.eval_batch)


def _text_accuracy(before: float | None, after: float | None, protocol: dict[str, Any]) -> Accuracy:
    reasons = {c: "real text has no known loss floor" for c in ("bayes_loss", "entropy_rate", "loss_gap_to_floor")}
    if after is None:
        reasons["eval_loss"] = reasons["eval_loss_before"] = "eval_batches = 0, or this rank holds no loss"
    return Accuracy(eval_loss=after, eval_loss_before=before, protocol=protocol, null_reasons=reasons)


WORKLOAD = register(
    Workload(
        name="train",
        summary="forward/backward/optimizer steps under DDP (or the strategy's layout)",
        run=run,
        options_type=TrainOptions,
        metrics=(
            *MODEL_METRICS,
            Metric("all_reduce_dtypes", list, doc="floating dtypes the recorded all_reduces carried"),
            Metric("model_state_bytes", int, "B", doc="params + grads + optimizer states this rank holds at the optimizer step"),
            Metric("model_state_peak_bytes", int, "B", doc="the same plus the unsharded params kept from forward to backward"),
        ),
    )
)

"""What every model workload does first: build the model, apply strategies, make batches, evaluate."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from bench.contracts import Accuracy, Parallel, TrialConfig
from bench.distributed.env import RankEnv
from bench.models.zoo import MODELS, build_model, count_params, grad_bytes
from bench.strategies import Aspect, Composition, Metric, TrialState
from bench.strategies.metrics import Metrics
from bench.workloads import WORKLOADS
from bench.workloads.sources import LMBatch, MarkovChain, bayes_loss, make_batch, stream_seed

# What `build_state` records for every model workload (each lists these among its own metrics).
MODEL_METRICS = (
    Metric("model_params", int, "count", column="model_params", doc="distinct parameters of the model before strategies"),
    Metric("grad_bytes", int, "B", doc="bytes of the model's trainable parameters' gradients"),
)
# The model's storage after its strategies (`lm.model_sizes`, `sizing`): infer and transfer.
SIZE_METRICS = (
    Metric("model_bytes", int, "B", column="model_bytes", doc="dense storage of the model after its strategies"),
    Metric("model_sparse_bytes", int, "B", column="model_sparse_bytes", doc="the same, each tensor as bitmask + non-zeros where smaller"),
)


def build_state(
    cfg: TrialConfig, comp: Composition, env: RankEnv, aspects: tuple[Aspect, ...], model: nn.Module | None = None
) -> TrialState:
    """Build the model (or take `model`) on this rank's device and apply the composition's `aspects` in order."""
    spec = MODELS.get(cfg.model)
    model = (model if model is not None else build_model(spec, cfg.seed)).to(env.device)
    metrics = Metrics(WORKLOADS.get(cfg.workload).metrics, owner=f"the {cfg.workload} workload")
    state = TrialState(cfg=cfg, env=env, spec=spec, model=model, parallel=Parallel(dp=env.world_size), metrics=metrics)
    state.metrics["model_params"] = count_params(model)
    state.metrics["grad_bytes"] = grad_bytes(model)
    for aspect in aspects:
        comp.apply(aspect, state)
    return state


def synthetic_protocol(cfg: TrialConfig, held_out: list[LMBatch]) -> dict[str, Any]:
    """How accuracy on the synthetic language is measured (the `accuracy_protocol` column)."""
    return {
        "corpus": "synthetic Markov source", "data": dataclasses.asdict(cfg.data), "split": "eval", "level": "token",
        "metric": "held-out loss against the exact Bayes floor", "batches": len(held_out),
        "tokens_scored": sum(b.input_ids.numel() for b in held_out),
    }  # fmt: skip


def batches(cfg: TrialConfig, chain: MarkovChain, causal: bool, split: str, rank: int, count: int) -> list[LMBatch]:
    """`count` batches of the `split` stream for `rank` (eval batches: pass rank=0 everywhere)."""
    return [
        make_batch(chain, causal, cfg.batch_size, cfg.seq_len, stream_seed(cfg.data.seed, cfg.seed, split, rank, i))
        for i in range(count)
    ]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    chain: MarkovChain,
    held_out: list[LMBatch],
    device: torch.device,
    loss_of: Callable[[LMBatch], float | None] | None = None,
) -> Accuracy:
    """Mean loss on held-out batches, beside the Bayes floor on the same batches.

    `loss_of` replaces the model's own forward where the layout splits it (pipeline stages);
    it returns None on ranks that do not hold the loss, whose accuracy is then empty.
    """
    loss = evaluate_loss(model, held_out, device, loss_of) if held_out else None
    return held_out_accuracy(chain, held_out, loss)


def held_out_accuracy(chain: MarkovChain, held_out: list[LMBatch], loss: float | None) -> Accuracy:
    """A mean held-out `loss` (None: not on this rank) beside the Bayes floor on the same batches."""
    if loss is None:
        return Accuracy(entropy_rate=chain.entropy_rate())
    floors = [bayes_loss(chain, b) for b in held_out]
    floor = None if any(f is None for f in floors) else sum(floors) / len(floors)  # type: ignore[arg-type]
    return Accuracy(eval_loss=loss, bayes_loss=floor, entropy_rate=chain.entropy_rate())


@torch.no_grad()
def evaluate_loss(
    model: nn.Module, held_out: list[LMBatch], device: torch.device, loss_of: Callable[[LMBatch], float | None] | None = None
) -> float | None:
    """Mean loss over `held_out` in eval mode; None where `loss_of` holds no loss on this rank."""
    was_training = model.training
    model.eval()
    losses = [loss_of(b) if loss_of else float(model(**_to(b, device)).loss) for b in held_out]
    model.train(was_training)
    if any(x is None for x in losses):
        return None
    return sum(losses) / len(losses)  # type: ignore[arg-type]


def _to(b: LMBatch, device: torch.device) -> dict[str, torch.Tensor]:
    b = b.to(device)
    return {"input_ids": b.input_ids, "labels": b.labels}

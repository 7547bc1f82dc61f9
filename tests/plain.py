"""Plain computations the tests compare commbench's numbers with: the textbook loop, no project code in the arithmetic."""

from __future__ import annotations

from typing import Any

import torch

from bench.contracts import TrialConfig
from bench.models.zoo import MODELS, build_model
from bench.workloads.common import batches
from bench.workloads.sources import MarkovChain
from tests.unit.tiny_models import apply


@torch.no_grad()
def perplexity_by_hand(model: Any, ids: torch.Tensor, window: int, stride: int) -> tuple[float, int]:
    """Sliding-window perplexity as the Hugging Face guide writes it: each window's new tokens
    are its labels, the rest -100, and transformers' own shifted loss does the scoring."""
    nll, count, prev_end = 0.0, 0, 0
    for begin in range(0, ids.numel(), stride):
        end = min(begin + window, ids.numel())
        chunk = ids[begin:end][None]
        labels = chunk.clone()
        labels[:, : -(end - prev_end)] = -100
        valid = int((labels[:, 1:] != -100).sum())  # the model shifts labels by one
        nll += float(model(chunk, labels=labels).loss) * valid
        count += valid
        prev_end = end
        if end == ids.numel():
            break
    return float(torch.exp(torch.tensor(nll / count, dtype=torch.float64))), count


@torch.no_grad()
def held_out_by_hand(cfg: TrialConfig) -> dict[str, float]:
    """What infer should report for a zoo model under `cfg`, computed plainly: the compressed
    model's mean held-out loss, and KL(reference || compressed) and top-1 agreement over every
    held-out position, from two freshly built copies of the model."""
    spec = MODELS.get(cfg.model)
    ref, cand = build_model(spec, cfg.seed).eval(), build_model(spec, cfg.seed).eval()
    apply(cfg.strategy, cand)
    held_out = batches(cfg, MarkovChain.from_config(cfg.data), spec.causal, "eval", 0, cfg.eval_batches)
    losses = [float(cand(input_ids=b.input_ids, labels=b.labels).loss) for b in held_out]
    ids = torch.cat([b.input_ids for b in held_out])
    p, q = ref(ids).logits.log_softmax(-1), cand(ids).logits.log_softmax(-1)
    return {
        "eval_loss": sum(losses) / len(losses),
        "kl_mean": float((p.exp() * (p - q)).sum(-1).mean()),
        "top1_agreement": float((p.argmax(-1) == q.argmax(-1)).float().mean()),
    }

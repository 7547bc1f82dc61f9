"""Accuracy measures for compressed models: perplexity, fidelity to a reference, embedding similarity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def read_corpus(path: str | Path, tokenizer: Any, max_tokens: int | None) -> torch.Tensor:
    """The first `max_tokens` token ids of a text file (1-D int64), read only as far as needed."""
    text_parts: list[str] = []
    budget = None if max_tokens is None else max_tokens * 8  # characters; ~4 per token, with margin
    size = 0
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            text_parts.append(line)
            size += len(line)
            if budget is not None and size >= budget:
                break
    ids = tokenizer("".join(text_parts), return_tensors="pt", add_special_tokens=False)["input_ids"][0]
    return ids if max_tokens is None else ids[:max_tokens]


@torch.no_grad()
def perplexity(model: nn.Module, token_ids: torch.Tensor, window: int, stride: int, max_tokens: int | None) -> dict[str, Any]:
    """Sliding-window perplexity (the Hugging Face recipe): exp of the mean next-token NLL.

    Windows of `window` tokens start every `stride` tokens; each scores only the tokens the
    previous window did not, with up to `window - stride` tokens of earlier context. Every
    token but the first is scored exactly once, so `tokens == n - 1`.
    """
    if stride > window or stride < 1:
        raise ValueError("need 1 <= stride <= window")
    ids = token_ids.reshape(-1)
    if max_tokens is not None:
        ids = ids[:max_tokens]
    n = ids.numel()
    nll_sum, scored, prev_end = 0.0, 0, 0
    for begin in range(0, n - 1, stride):
        end = min(begin + window, n)
        chunk = ids[begin:end][None]
        logits = model(input_ids=chunk).logits[0, :-1].float()
        targets = chunk[0, 1:]
        # Position p predicts token begin+p+1; score it only if that token is new.
        first_new = max(prev_end, begin + 1) - (begin + 1)
        logp = F.log_softmax(logits[first_new:], dim=-1)
        nll_sum += float(-logp.gather(1, targets[first_new:, None]).sum())
        scored += targets.numel() - first_new
        prev_end = end
        if end == n:
            break
    mean = nll_sum / scored if scored else float("nan")
    return {"nll_sum": nll_sum, "tokens": scored, "nll_mean": mean, "ppl": float(torch.tensor(mean).exp())}


def fidelity(reference_logits: torch.Tensor, candidate_logits: torch.Tensor) -> dict[str, float]:
    """Mean KL(p_ref || p_cand) over positions (nats) and the share of positions whose argmax agrees.

    Both inputs are `[positions, vocab]` logits.
    """
    ref = F.log_softmax(reference_logits.float(), dim=-1)
    cand = F.log_softmax(candidate_logits.float(), dim=-1)
    kl = (ref.exp() * (ref - cand)).sum(-1).clamp_min(0.0)
    agree = (reference_logits.argmax(-1) == candidate_logits.argmax(-1)).float()
    return {"kl_mean": float(kl.mean()), "top1_agreement": float(agree.mean())}


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings as all-MiniLM-L6-v2 makes them: mean over real tokens, then L2-normalised."""
    mask = attention_mask[..., None].to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
    return F.normalize(pooled, dim=-1)


def embedding_cosine(reference: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each row of `candidate` to the same row of `reference`."""
    return F.cosine_similarity(reference.float(), candidate.float(), dim=-1)

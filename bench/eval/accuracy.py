"""Accuracy measures for compressed models: perplexity, fidelity to a reference, embedding similarity."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_CHARS_PER_TOKEN = 8  # generous for English BPE (~4): read this many characters per wanted token


def read_corpus(path: str | Path, tokenizer: Any, max_tokens: int | None) -> torch.Tensor:
    """The first `max_tokens` token ids of the text file at `path` (all of it for None), 1-D int64.

    Reads only a prefix of about twice the characters needed, doubling it while the text
    gives too few tokens; only the last token before the cut can differ from tokenizing
    the whole file, and it is always cut off. No special tokens are added.
    """
    if max_tokens is None:
        return tokenize(Path(path).read_text(encoding="utf-8"), tokenizer)
    budget = max_tokens * _CHARS_PER_TOKEN
    while True:
        with Path(path).open(encoding="utf-8") as f:
            text = f.read(budget)
        ids = tokenize(text, tokenizer)
        if ids.numel() > max_tokens or len(text) < budget:  # enough, or the whole file
            return ids[:max_tokens]
        budget *= 2


def tokenize(text: str, tokenizer: Any) -> torch.Tensor:
    return tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][0]


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 logits in float32 (their softmax would round away small probabilities); float64 kept."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def sliding_windows(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first scored position) of each window over `n` tokens (the Hugging Face recipe).

    Windows of `window` tokens start every `stride` tokens until one reaches the end.
    Position p of a window predicts token begin + p + 1, and a window scores only the
    tokens no earlier window scored, so each token is scored once, with up to
    `window - stride` tokens of earlier context. With overlap (stride < window) that is
    every token but the first: n - 1. Without (stride == window) the first token of each
    window has no context inside it and is not scored: n - (number of windows).
    """
    out: list[tuple[int, int, int]] = []
    prev_end = 0
    for begin in range(0, max(n - 1, 0), stride):
        end = min(begin + window, n)
        out.append((begin, end, max(prev_end, begin + 1) - (begin + 1)))
        prev_end = end
        if end == n:
            break
    return out


@torch.no_grad()
def perplexity(
    model: nn.Module,
    token_ids: torch.Tensor,
    window: int,
    stride: int,
    max_tokens: int | None,
    on_window: Callable[[int, int, torch.Tensor], None] | None = None,
) -> dict[str, Any]:
    """Sliding-window perplexity: exp(nll_sum / tokens) over the windows of `sliding_windows`.

    Uses the first `max_tokens` of `token_ids` (all for None). `model(input_ids=...)` must
    return an object with `.logits` ([1, len, vocab]). Returns nll_sum (nats), tokens
    (how many were scored, see `sliding_windows`), nll_mean (nats/token) and ppl.
    `on_window(begin, end, logits)` sees every window's whole logits as the model gave them,
    so a caller that needs some windows' logits (fidelity) does not run those windows again.
    """
    if window < 2 or not 1 <= stride <= window:
        raise ValueError(f"need window >= 2 and 1 <= stride <= window, got window={window}, stride={stride}")
    ids = token_ids.reshape(-1)[:max_tokens]
    nll_sum, scored = 0.0, 0
    for begin, end, first in sliding_windows(ids.numel(), window, stride):
        chunk = ids[begin:end][None]
        out = model(input_ids=chunk).logits
        if on_window is not None:
            on_window(begin, end, out)
        logits = at_least_fp32(out[0, first:-1])
        targets = chunk[0, first + 1 :]
        nll_sum += float(F.cross_entropy(logits, targets, reduction="sum"))
        scored += targets.numel()
    mean = nll_sum / scored if scored else float("nan")
    return {"nll_sum": nll_sum, "tokens": scored, "nll_mean": mean, "ppl": math.exp(mean)}


def fidelity(reference_logits: torch.Tensor, candidate_logits: torch.Tensor) -> dict[str, float]:
    """Mean KL(p_ref || p_cand) in nats over positions, and the share of positions whose argmax agrees.

    Inputs are logits of the same shape `[..., vocab]`; every leading index is one position.
    """
    vocab = reference_logits.shape[-1]
    dtype = torch.promote_types(reference_logits.dtype, candidate_logits.dtype)
    ref = F.log_softmax(at_least_fp32(reference_logits.reshape(-1, vocab).to(dtype)), dim=-1)
    cand = F.log_softmax(at_least_fp32(candidate_logits.reshape(-1, vocab).to(dtype)), dim=-1)
    kl = F.kl_div(cand, ref, log_target=True, reduction="none").sum(-1)
    agree = (ref.argmax(-1) == cand.argmax(-1)).float()
    return {"kl_mean": float(kl.mean()), "top1_agreement": float(agree.mean())}


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings as all-MiniLM-L6-v2 makes them: mean over real tokens, then L2-normalised."""
    mask = attention_mask[..., None].to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
    return F.normalize(pooled, dim=-1)


def embedding_cosine(reference: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each row of `candidate` to the same row of `reference` ([rows])."""
    return F.cosine_similarity(reference.float(), candidate.float(), dim=-1)

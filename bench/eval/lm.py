"""Accuracy glue for the infer workload: corpus loading, perplexity, fidelity to the reference, sizes."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.eval.accuracy import embedding_cosine, fidelity, mean_pool, perplexity, read_corpus
from bench.models.sizing import dense_bytes, sparse_bytes
from bench.runner.config import TrialConfig

DEFAULT_CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "wikitext-2" / "valid.txt"
CORPUS_ENV = "COMMBENCH_WIKITEXT"
Autocast = Callable[[], AbstractContextManager[Any]]


def corpus_path(cfg: TrialConfig) -> Path:
    """`options.corpus`, else $COMMBENCH_WIKITEXT, else ../shared/data/wikitext-2/valid.txt."""
    return Path(cfg.options.get("corpus") or os.environ.get(CORPUS_ENV) or DEFAULT_CORPUS)


def corpus_reason(cfg: TrialConfig) -> str:
    return f"corpus file not found: {corpus_path(cfg)} (set options.corpus or ${CORPUS_ENV})"


def corpus_ids(cfg: TrialConfig, tokenizer: Any) -> torch.Tensor | None:
    """Token ids of the corpus (up to options.max_tokens, default 16384), or None without a file."""
    path = corpus_path(cfg)
    if not path.is_file():
        return None
    return read_corpus(path, tokenizer, int(cfg.options.get("max_tokens", 16384)))


def window_stride(cfg: TrialConfig) -> tuple[int, int]:
    """`options.window` (default 512) and `options.stride` (default window // 2).

    Overlapping windows are the Hugging Face recipe for fixed-length models: each window
    scores only the tokens no earlier one scored, so every token past the first window is
    scored with at least `window - stride` tokens of context. With stride == window the
    first tokens of each window would be scored with almost none, overstating perplexity.
    """
    window = int(cfg.options.get("window", 512))
    return window, int(cfg.options.get("stride", max(1, window // 2)))


def corpus_accuracy(
    cfg: TrialConfig, reference: nn.Module, model: nn.Module, ids: torch.Tensor, device: torch.device, autocast: Autocast
) -> dict[str, Any]:
    """Sliding-window perplexity of `model` (see `window_stride`), and its fidelity to `reference` on the same text."""
    window, stride = window_stride(cfg)
    with autocast():
        ppl = perplexity(model, ids.to(device), window=window, stride=stride, max_tokens=None)
    chunks = [ids[i : i + window] for i in range(0, ids.numel() - 1, window)][: int(cfg.options.get("fidelity_windows", 8))]
    fid = batch_fidelity(reference, model, [c[None] for c in chunks if c.numel() > 1], device, autocast)
    return {"perplexity": ppl["ppl"], "perplexity_tokens": ppl["tokens"], **fid}


@torch.no_grad()
def batch_fidelity(
    reference: nn.Module, model: nn.Module, inputs: list[torch.Tensor], device: torch.device, autocast: Autocast
) -> dict[str, Any]:
    """Mean KL(reference || model) of next-token distributions and top-1 agreement over `inputs`."""
    kls, agree, weights = [], [], []
    for ids in inputs:
        ids = ids.to(device)
        ref = reference(input_ids=ids).logits.float()
        with autocast():
            cand = model(input_ids=ids).logits.float()
        f = fidelity(ref.reshape(-1, ref.shape[-1]), cand.reshape(-1, cand.shape[-1]))
        kls.append(f["kl_mean"])
        agree.append(f["top1_agreement"])
        weights.append(ids.numel())
    if not weights:
        return {}
    total = sum(weights)
    return {
        "kl_mean": sum(k * w for k, w in zip(kls, weights)) / total,
        "top1_agreement": sum(a * w for a, w in zip(agree, weights)) / total,
    }


def sentence_batch(cfg: TrialConfig, tokenizer: Any, count: int, seq_len: int) -> dict[str, torch.Tensor]:
    """`count` corpus lines (or fixed sentences without a corpus), tokenized to `seq_len`."""
    path = corpus_path(cfg)
    lines: list[str] = []
    if path.is_file():
        with path.open(encoding="utf-8") as f:
            lines = [line.strip() for line in f if len(line.split()) >= 8][:count]
    while len(lines) < count:  # no corpus: deterministic filler sentences
        lines.append(f"Sentence number {len(lines)} is about communication in distributed training.")
    return dict(tokenizer(lines, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt"))


@torch.no_grad()
def embedding_fidelity(
    cfg: TrialConfig, tokenizer: Any, reference: nn.Module, model: nn.Module, device: torch.device, autocast: Autocast
) -> dict[str, Any]:
    """Mean cosine similarity of sentence embeddings (mean-pooled) to the reference model's."""
    batch = {k: v.to(device) for k, v in sentence_batch(cfg, tokenizer, int(cfg.options.get("sentences", 64)), cfg.seq_len).items()}
    ref = mean_pool(reference(**batch).last_hidden_state.float(), batch["attention_mask"])
    with autocast():
        cand = mean_pool(model(**batch).last_hidden_state.float(), batch["attention_mask"])
    cos = embedding_cosine(ref, cand)
    return {"embedding_cosine": float(cos.mean()) if isinstance(cos, torch.Tensor) else float(cos), "sentences": int(ref.shape[0])}


def model_sizes(model: nn.Module) -> dict[str, Any]:
    """Dense storage bytes of the (possibly compressed) model and its bitmask-sparse size."""
    return {"model_bytes": dense_bytes(model), "model_sparse_bytes": sparse_bytes(model, format="bitmask")}

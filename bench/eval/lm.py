"""Accuracy glue for the infer workload: corpus loading, perplexity, fidelity to the reference, sizes."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.eval.accuracy import embedding_cosine, fidelity, mean_pool, perplexity, read_corpus
from bench.models.sizing import dense_bytes, sparse_bytes

DEFAULT_CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "wikitext-2" / "valid.txt"
CORPUS_ENV = "COMMBENCH_WIKITEXT"
Autocast = Callable[[], AbstractContextManager[Any]]


def corpus_path(corpus: str | None) -> Path:
    """The text file a workload reads: `corpus`, else $COMMBENCH_WIKITEXT, else ../shared/data/wikitext-2/valid.txt."""
    return Path(corpus or os.environ.get(CORPUS_ENV) or DEFAULT_CORPUS)


def missing_corpus_reason(path: Path) -> str:
    return f"corpus file not found: {path} (set options.corpus or ${CORPUS_ENV})"


@dataclass(kw_only=True, slots=True, frozen=True)
class CorpusOptions:
    """How accuracy is measured on text: the infer workload's `options.*`.

    Overlapping windows are the Hugging Face recipe for fixed-length models: each window
    scores only the tokens no earlier one scored, so every token past the first window is
    scored with at least `window - stride` tokens of context. With stride == window the
    first tokens of each window would be scored with almost none, overstating perplexity.
    """

    corpus: str | None = None  # a text file; else $COMMBENCH_WIKITEXT, else ../shared/data/wikitext-2/valid.txt
    max_tokens: int = 16384  # corpus tokens scored for perplexity
    window: int = 512  # tokens per perplexity window
    stride: int | None = None  # tokens between window starts; None: window // 2
    fidelity_windows: int = 8  # windows of `window` tokens for KL / top-1 against the reference
    sentences: int = 64  # embedding models: corpus lines embedded for the cosine

    def __post_init__(self) -> None:
        if self.max_tokens < 2:
            raise ValueError("max_tokens must be >= 2")
        if self.window < 2:
            raise ValueError("window must be >= 2")
        if self.stride is not None and not 1 <= self.stride <= self.window:
            raise ValueError(f"stride must be in [1, window={self.window}]")
        if self.fidelity_windows < 0:
            raise ValueError("fidelity_windows must be >= 0")
        if self.sentences < 1:
            raise ValueError("sentences must be >= 1")

    @property
    def path(self) -> Path:
        return corpus_path(self.corpus)

    @property
    def window_stride(self) -> tuple[int, int]:
        return self.window, self.stride if self.stride is not None else max(1, self.window // 2)

    def missing_reason(self) -> str:
        return missing_corpus_reason(self.path)


def corpus_ids(opts: CorpusOptions, tokenizer: Any) -> torch.Tensor | None:
    """Token ids of the corpus (up to `max_tokens`), or None without a file."""
    if not opts.path.is_file():
        return None
    return read_corpus(opts.path, tokenizer, opts.max_tokens)


def corpus_accuracy(
    opts: CorpusOptions, reference: nn.Module, model: nn.Module, ids: torch.Tensor, device: torch.device, autocast: Autocast
) -> dict[str, Any]:
    """Sliding-window perplexity of `model` (see `CorpusOptions`), and its fidelity to `reference` on the same text."""
    window, stride = opts.window_stride
    with autocast():
        ppl = perplexity(model, ids.to(device), window=window, stride=stride, max_tokens=None)
    chunks = [ids[i : i + window] for i in range(0, ids.numel() - 1, window)][: opts.fidelity_windows]
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


def sentence_batch(opts: CorpusOptions, tokenizer: Any, count: int, seq_len: int) -> dict[str, torch.Tensor]:
    """`count` corpus lines (or fixed sentences without a corpus), tokenized to `seq_len`."""
    path = opts.path
    lines: list[str] = []
    if path.is_file():
        with path.open(encoding="utf-8") as f:
            lines = [line.strip() for line in f if len(line.split()) >= 8][:count]
    while len(lines) < count:  # no corpus: deterministic filler sentences
        lines.append(f"Sentence number {len(lines)} is about communication in distributed training.")
    return dict(tokenizer(lines, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt"))


@torch.no_grad()
def embedding_fidelity(
    opts: CorpusOptions, seq_len: int, tokenizer: Any, reference: nn.Module, model: nn.Module, device: torch.device,
    autocast: Autocast,
) -> dict[str, Any]:
    """Mean cosine similarity of sentence embeddings (mean-pooled) to the reference model's."""
    batch = {k: v.to(device) for k, v in sentence_batch(opts, tokenizer, opts.sentences, seq_len).items()}
    ref = mean_pool(reference(**batch).last_hidden_state.float(), batch["attention_mask"])
    with autocast():
        cand = mean_pool(model(**batch).last_hidden_state.float(), batch["attention_mask"])
    cos = embedding_cosine(ref, cand)
    return {"embedding_cosine": float(cos.mean()) if isinstance(cos, torch.Tensor) else float(cos)}


def model_sizes(model: nn.Module) -> dict[str, Any]:
    """Dense storage bytes of the (possibly compressed) model and its bitmask-sparse size."""
    return {"model_bytes": dense_bytes(model), "model_sparse_bytes": sparse_bytes(model, format="bitmask")}

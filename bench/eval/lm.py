"""Accuracy on text for the infer workload: its options, and the two text tasks (perplexity, sentence embeddings).

A task knows what it measures on (token ids or sentences), the key of the reference outputs
it needs (`bench.eval.reference`), how to compute those with the reference model, and how
to score a candidate against them. Every score carries its protocol: the corpus, its
SHA-256, tokens, window, stride, level and the reference's identity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from bench.contracts import Accuracy
from bench.eval.accuracy import embedding_cosine, fidelity, mean_pool, perplexity, read_corpus
from bench.eval.corpus import Corpus
from bench.models.sizing import dense_bytes, sparse_bytes

Autocast = Callable[[], AbstractContextManager[Any]]
MIN_SENTENCE_WORDS = 8  # corpus lines shorter than this are headings or blank


@dataclass(kw_only=True, slots=True, frozen=True)
class CorpusOptions:
    """How accuracy is measured on text: the infer workload's `options.*`.

    Overlapping windows are the Hugging Face recipe for fixed-length models: each window
    scores only the tokens no earlier one scored, so every token past the first window is
    scored with at least `window - stride` tokens of context. With stride == window the
    first tokens of each window would be scored with almost none, overstating perplexity.
    """

    corpus: str | None = None  # a text file; "hub"; unset: WikiText-2 valid, local copy else hub (bench.eval.corpus)
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
    def window_stride(self) -> tuple[int, int]:
        return self.window, self.stride if self.stride is not None else max(1, self.window // 2)


class AccuracyTask(Protocol):
    """What accuracy is measured on, and the reference outputs it needs."""

    def key(self) -> dict[str, Any]:
        """Everything that determines the reference outputs (hashed into their cache entry)."""
        ...

    def reference(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The reference model's outputs this task scores candidates against."""
        ...

    def score(self, model: nn.Module, ref: dict[str, torch.Tensor], autocast: Autocast) -> Accuracy:
        """The candidate's accuracy against `ref`, with the protocol it was measured under."""
        ...


def ids_sha256(*tensors: torch.Tensor) -> str:
    """SHA-256 of token tensors: the inputs themselves, in the reference's cache key."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().to(torch.int64).contiguous().reshape(-1).numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def logits_of(model: nn.Module, inputs: list[torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The model's float32 logits on each input: `logits.0`, `logits.1`, ..."""
    return {f"logits.{i}": model(input_ids=ids.to(device)).logits.float() for i, ids in enumerate(inputs)}


@torch.no_grad()
def fidelity_to(
    ref: dict[str, torch.Tensor], model: nn.Module, inputs: list[torch.Tensor], device: torch.device, autocast: Autocast
) -> dict[str, Any]:
    """Mean KL(reference || model) of next-token distributions and top-1 agreement, over every position of `inputs`."""
    if not inputs:
        return {}
    kl_sum, agree_sum, positions = 0.0, 0.0, 0
    for i, ids in enumerate(inputs):
        with autocast():
            cand = model(input_ids=ids.to(device)).logits.float()
        r = ref[f"logits.{i}"].to(cand.device)
        f = fidelity(r.reshape(-1, r.shape[-1]), cand.reshape(-1, cand.shape[-1]))
        n = ids.numel()
        kl_sum, agree_sum, positions = kl_sum + f["kl_mean"] * n, agree_sum + f["top1_agreement"] * n, positions + n
    return {"kl_mean": kl_sum / positions, "top1_agreement": agree_sum / positions}


@dataclass(kw_only=True)
class CorpusPerplexity:
    """Causal LMs on a corpus: sliding-window perplexity, and KL / top-1 against the reference on its first windows."""

    opts: CorpusOptions
    corpus: Corpus
    ids: torch.Tensor  # the first max_tokens token ids, 1-D
    device: torch.device
    reference_id: dict[str, Any]  # model name, weights source, weights fingerprint

    @classmethod
    def read(
        cls, opts: CorpusOptions, corpus: Corpus, tokenizer: Any, device: torch.device, reference_id: dict[str, Any]
    ) -> CorpusPerplexity:
        ids = read_corpus(corpus.path, tokenizer, opts.max_tokens)
        return cls(opts=opts, corpus=corpus, ids=ids, device=device, reference_id=reference_id)

    def chunks(self) -> list[torch.Tensor]:
        """The fidelity windows: consecutive `window`-token slices from the start, as [1, len] batches."""
        window, _ = self.opts.window_stride
        chunks = [self.ids[i : i + window] for i in range(0, self.ids.numel() - 1, window)][: self.opts.fidelity_windows]
        return [c[None] for c in chunks if c.numel() > 1]

    def protocol(self) -> dict[str, Any]:
        window, stride = self.opts.window_stride
        return {
            **self.corpus.protocol(),
            "metric": "sliding-window perplexity; KL and top-1 agreement against the reference",
            "level": "token",
            "tokens_read": int(self.ids.numel()),
            "max_tokens": self.opts.max_tokens,
            "window": window,
            "stride": stride,
            "fidelity_windows": len(self.chunks()),
            "fidelity_positions": sum(c.numel() for c in self.chunks()),
            "reference": self.reference_id,
        }

    def key(self) -> dict[str, Any]:
        return {"task": "corpus-perplexity", "ids_sha256": ids_sha256(self.ids), **self.protocol()}

    def _perplexity(self, model: nn.Module) -> dict[str, Any]:
        window, stride = self.opts.window_stride
        return perplexity(model, self.ids.to(self.device), window=window, stride=stride, max_tokens=None)

    def reference(self, model: nn.Module) -> dict[str, torch.Tensor]:
        ppl = self._perplexity(model)
        sums = {"nll_sum": torch.tensor(ppl["nll_sum"], dtype=torch.float64), "tokens": torch.tensor(ppl["tokens"])}
        return {**sums, **logits_of(model, self.chunks(), self.device)}

    def score(self, model: nn.Module, ref: dict[str, torch.Tensor], autocast: Autocast) -> Accuracy:
        with autocast():
            ppl = self._perplexity(model)
        fid = fidelity_to(ref, model, self.chunks(), self.device, autocast)
        reference_ppl = torch.exp(ref["nll_sum"] / ref["tokens"]).item()
        return Accuracy(
            perplexity=ppl["ppl"], perplexity_tokens=ppl["tokens"], reference_perplexity=reference_ppl,
            kl_mean=fid.get("kl_mean"), top1_agreement=fid.get("top1_agreement"),
            protocol={**self.protocol(), "tokens_scored": ppl["tokens"]},
        )  # fmt: skip


def corpus_lines(corpus: Corpus, count: int) -> list[str]:
    """The first `count` lines of the corpus with at least MIN_SENTENCE_WORDS words."""
    lines: list[str] = []
    with corpus.path.open(encoding="utf-8") as f:
        for line in f:
            if len(line.split()) >= MIN_SENTENCE_WORDS:
                lines.append(line.strip())
                if len(lines) == count:
                    break
    return lines


def sentence_batch(lines: list[str], tokenizer: Any, seq_len: int) -> dict[str, torch.Tensor]:
    """`lines` tokenized, padded and truncated to `seq_len`."""
    return dict(tokenizer(lines, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt"))


@dataclass(kw_only=True)
class SentenceEmbeddings:
    """Embedding models: cosine of mean-pooled sentence embeddings of corpus lines to the reference's."""

    corpus: Corpus
    batch: dict[str, torch.Tensor]
    seq_len: int
    device: torch.device
    reference_id: dict[str, Any]
    lines: int = field(init=False)

    def __post_init__(self) -> None:
        self.lines = int(self.batch["input_ids"].shape[0])

    def protocol(self) -> dict[str, Any]:
        return {
            **self.corpus.protocol(),
            "metric": "cosine of mean-pooled sentence embeddings to the reference's",
            "level": "sentence",
            "sentences": self.lines,
            "min_words": MIN_SENTENCE_WORDS,
            "seq_len": self.seq_len,
            "tokens_scored": int(self.batch["attention_mask"].sum()),
            "reference": self.reference_id,
        }

    def key(self) -> dict[str, Any]:
        return {"task": "sentence-embeddings", "ids_sha256": ids_sha256(*self.batch.values()), **self.protocol()}

    @torch.no_grad()
    def _embed(self, model: nn.Module) -> torch.Tensor:
        batch = {k: v.to(self.device) for k, v in self.batch.items()}
        return mean_pool(model(**batch).last_hidden_state.float(), batch["attention_mask"])

    def reference(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {"embeddings": self._embed(model)}

    def score(self, model: nn.Module, ref: dict[str, torch.Tensor], autocast: Autocast) -> Accuracy:
        with autocast():
            cand = self._embed(model)
        cos = embedding_cosine(ref["embeddings"].to(cand.device), cand)
        return Accuracy(embedding_cosine=float(cos.mean()), protocol=self.protocol())


def model_sizes(model: nn.Module) -> dict[str, Any]:
    """Dense storage bytes of the (possibly compressed) model and its bitmask-sparse size."""
    return {"model_bytes": dense_bytes(model), "model_sparse_bytes": sparse_bytes(model, format="bitmask")}

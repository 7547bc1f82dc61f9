"""Accuracy on text for the infer workload: its options, and the two text tasks (perplexity, sentence embeddings).

A task knows what it measures on (token ids or sentences), the key of the reference outputs
it needs (`bench.eval.reference`), what a model outputs on those inputs (the reference's
outputs are the same thing, computed once and cached) and how to compare a candidate's
outputs with the reference's. Every score carries its protocol: the corpus, its SHA-256,
tokens, window, stride, level and the reference's identity.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from bench.contracts import Accuracy
from bench.eval.accuracy import embedding_cosine, fidelity, mean_pool, perplexity, read_corpus
from bench.eval.corpus import Corpus
from bench.models.sizing import dense_bytes, sparse_bytes

Autocast = Callable[[], AbstractContextManager[Any]]
Outputs = dict[str, torch.Tensor]
MIN_SENTENCE_WORDS = 8  # corpus lines shorter than this are headings or blank


@dataclass(kw_only=True, slots=True, frozen=True)
class CorpusOptions:
    """How accuracy is measured on text: the infer workload's `options.*`.

    The default is the protocol of GPTQ and most quantization papers: non-overlapping
    windows (stride == window), each token read once, so a window's first tokens are scored
    with little context and the perplexity is higher than a sliding window's. It costs one
    forward per `window` tokens. A smaller `stride` gives the Hugging Face sliding-window
    recipe: each window scores only the tokens no earlier one scored, every token past the
    first window with at least `window - stride` tokens of context, at window/stride times
    the forwards. The row's `accuracy_protocol` records which one scored it.
    """

    corpus: str | None = None  # a text file; "hub"; unset: WikiText-2 valid, local copy else hub (bench.eval.corpus)
    max_tokens: int = 16384  # corpus tokens scored for perplexity
    window: int = 512  # tokens per perplexity window
    stride: int | None = None  # tokens between window starts; None: window (non-overlapping)
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
        return self.window, self.stride if self.stride is not None else self.window


class AccuracyTask(Protocol):
    """What accuracy is measured on, and the reference outputs it needs."""

    def key(self) -> dict[str, Any]:
        """Everything that determines the reference outputs (hashed into their cache entry)."""
        ...

    def outputs(self, model: nn.Module, autocast: Autocast) -> Outputs:
        """What `model` gives on the task's inputs: the reference's are these, without autocast."""
        ...

    def compare(self, cand: Outputs, ref: Outputs) -> Accuracy:
        """The candidate's accuracy from its outputs and the reference's, with the protocol it was measured under."""
        ...


def reference(task: AccuracyTask, model: nn.Module) -> Outputs:
    """The reference model's outputs, which candidates are compared with."""
    return task.outputs(model, nullcontext)


def score(task: AccuracyTask, model: nn.Module, ref: Outputs, autocast: Autocast) -> Accuracy:
    """The candidate's accuracy against the reference's outputs `ref`."""
    return task.compare(task.outputs(model, autocast), ref)


def ids_sha256(*tensors: torch.Tensor) -> str:
    """SHA-256 of token tensors: the inputs themselves, in the reference's cache key."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().to(torch.int64).contiguous().reshape(-1).numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def logits_of(model: nn.Module, inputs: list[torch.Tensor], device: torch.device) -> Outputs:
    """The model's float32 logits on each input: `logits.0`, `logits.1`, ..."""
    return {f"logits.{i}": model(input_ids=ids.to(device)).logits.float() for i, ids in enumerate(inputs)}


def fidelity_between(cand: Outputs, ref: Outputs, count: int) -> dict[str, Any]:
    """Mean KL(reference || candidate) of next-token distributions and top-1 agreement, over
    every position of the logits `logits.0` .. `logits.{count - 1}` of both."""
    if not count:
        return {}
    kl_sum, agree_sum, positions = 0.0, 0.0, 0
    for i in range(count):
        c = cand[f"logits.{i}"]
        r = ref[f"logits.{i}"].to(c.device)
        f = fidelity(r.reshape(-1, r.shape[-1]), c.reshape(-1, c.shape[-1]))
        n = c.shape[:-1].numel()
        kl_sum, agree_sum, positions = kl_sum + f["kl_mean"] * n, agree_sum + f["top1_agreement"] * n, positions + n
    return {"kl_mean": kl_sum / positions, "top1_agreement": agree_sum / positions}


@dataclass(kw_only=True)
class CorpusPerplexity:
    """Causal LMs on a corpus: windowed perplexity, and KL / top-1 against the reference on its first windows.

    A fidelity window that is also a perplexity window (window starts a multiple of the
    stride: all of them with the default, non-overlapping stride) takes its logits from the perplexity pass,
    so it costs no forward of its own.
    """

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

    def spans(self) -> list[tuple[int, int]]:
        """The fidelity windows: (begin, end) of consecutive `window`-token slices from the start."""
        window, _ = self.opts.window_stride
        n = self.ids.numel()
        spans = [(i, min(i + window, n)) for i in range(0, n - 1, window)][: self.opts.fidelity_windows]
        return [(b, e) for b, e in spans if e - b > 1]

    def protocol(self) -> dict[str, Any]:
        window, stride = self.opts.window_stride
        return {
            **self.corpus.protocol(),
            "metric": f"{'non-overlapping' if stride == window else 'sliding'}-window perplexity; KL and top-1 agreement against the reference",
            "level": "token",
            "tokens_read": int(self.ids.numel()),
            "max_tokens": self.opts.max_tokens,
            "window": window,
            "stride": stride,
            "fidelity_windows": len(self.spans()),
            "fidelity_positions": sum(e - b for b, e in self.spans()),
            "reference": self.reference_id,
        }

    def key(self) -> dict[str, Any]:
        return {"task": "corpus-perplexity", "ids_sha256": ids_sha256(self.ids), **self.protocol()}

    @torch.no_grad()
    def outputs(self, model: nn.Module, autocast: Autocast) -> Outputs:
        """The perplexity sums, and the fidelity windows' float32 logits (`logits.0`, ...)."""
        window, stride = self.opts.window_stride
        spans = self.spans()
        logits: dict[int, torch.Tensor] = {}

        def keep(begin: int, end: int, out: torch.Tensor) -> None:
            if (begin, end) in spans:
                logits[spans.index((begin, end))] = out.float()

        with autocast():
            ppl = perplexity(model, self.ids.to(self.device), window=window, stride=stride, max_tokens=None, on_window=keep)
            for i, (b, e) in enumerate(spans):
                if i not in logits:
                    logits[i] = model(input_ids=self.ids[b:e][None].to(self.device)).logits.float()
        sums = {"nll_sum": torch.tensor(ppl["nll_sum"], dtype=torch.float64), "tokens": torch.tensor(ppl["tokens"])}
        return {**sums, **{f"logits.{i}": logits[i] for i in range(len(spans))}}

    def compare(self, cand: Outputs, ref: Outputs) -> Accuracy:
        tokens = int(cand["tokens"])
        ppl = math.exp(float(cand["nll_sum"]) / tokens) if tokens else float("nan")
        fid = fidelity_between(cand, ref, len(self.spans()))
        reference_ppl = torch.exp(ref["nll_sum"] / ref["tokens"]).item()
        return Accuracy(
            perplexity=ppl, perplexity_tokens=tokens, reference_perplexity=reference_ppl,
            kl_mean=fid.get("kl_mean"), top1_agreement=fid.get("top1_agreement"),
            protocol={**self.protocol(), "tokens_scored": tokens},
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
    def outputs(self, model: nn.Module, autocast: Autocast) -> Outputs:
        batch = {k: v.to(self.device) for k, v in self.batch.items()}
        with autocast():
            return {"embeddings": mean_pool(model(**batch).last_hidden_state.float(), batch["attention_mask"])}

    def compare(self, cand: Outputs, ref: Outputs) -> Accuracy:
        cos = embedding_cosine(ref["embeddings"].to(cand["embeddings"].device), cand["embeddings"])
        return Accuracy(embedding_cosine=float(cos.mean()), protocol=self.protocol())


def model_sizes(model: nn.Module) -> dict[str, Any]:
    """Dense storage bytes of the (possibly compressed) model and its bitmask-sparse size."""
    return {"model_bytes": dense_bytes(model), "model_sparse_bytes": sparse_bytes(model, format="bitmask")}

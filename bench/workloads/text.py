"""Real-text batches for the train workload: a corpus tokenized with the pretrained model's own tokenizer.

`options.source = "corpus"` fine-tunes a pretrained causal LM on a text file (WikiText-2
validation by default, see bench/eval/corpus.py) instead of the synthetic Markov source. The
first `eval_batches * batch_size * seq_len` tokens are held out; the rest is cut into
`seq_len` chunks, which every rank visits in one seeded order (rank r takes its own slice of
each step's chunks; the order wraps around when the steps need more than one pass). Real text
has no known loss floor, so convergence is read as held-out loss before and after training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bench.contracts import TrialConfig
from bench.errors import SkipTrial
from bench.eval import corpus as corpora
from bench.eval.accuracy import read_corpus
from bench.workloads.sources import LMBatch, stream_seed


@dataclass(frozen=True)
class TextSplit:
    """One rank's training batches, the shared held-out batches, and how they were cut."""

    train: list[LMBatch]
    held_out: list[LMBatch]
    protocol: dict[str, Any]


def _causal(tokens: torch.Tensor) -> LMBatch:
    return LMBatch(tokens, tokens.clone(), tokens, None)


def corpus_split(cfg: TrialConfig, corpus_option: str | None, tokenizer: Any, rank: int, world: int, count: int) -> TextSplit:
    """`count` training batches for `rank` and the held-out batches; SkipTrial when there is no corpus."""
    found = corpora.find(corpus_option)
    if isinstance(found, str):
        raise SkipTrial(f"options.source = corpus: {found}")
    b, s = cfg.batch_size, cfg.seq_len
    held_tokens = cfg.eval_batches * b * s
    chunks_wanted = count * world * b
    ids = read_corpus(found.path, tokenizer, held_tokens + chunks_wanted * s)
    held, rest = ids[:held_tokens], ids[held_tokens:]
    n_chunks = rest.numel() // s
    if held.numel() < held_tokens or n_chunks < world * b:
        raise SkipTrial(
            f"corpus {found.path} has {ids.numel()} tokens: too few for {cfg.eval_batches} held-out and one training batch per rank"
        )
    chunks = rest[: n_chunks * s].view(n_chunks, s)
    order = torch.randperm(n_chunks, generator=torch.Generator().manual_seed(stream_seed(cfg.seed, "corpus")))
    train = []
    for i in range(count):
        first = (i * world + rank) * b
        train.append(_causal(chunks[order[torch.arange(first, first + b) % n_chunks]]))
    held_out = [_causal(c) for c in held.view(cfg.eval_batches, b, s)] if cfg.eval_batches else []
    protocol = {
        **found.protocol(), "split": f"first {held_tokens} tokens held out, the rest in {s}-token chunks",
        "level": "token", "metric": "held-out loss before and after training (real text: no known floor)",
        "batches": len(held_out), "tokens_scored": sum(x.input_ids.numel() for x in held_out),
        "train_chunks": n_chunks, "passes": round(chunks_wanted / n_chunks, 3),
    }  # fmt: skip
    return TextSplit(train, held_out, protocol)

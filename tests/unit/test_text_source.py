"""The train workload's real-text source: how a corpus is cut into held-out and per-rank training batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from bench.contracts import TrialConfig
from bench.errors import BenchError, SkipTrial
from bench.runner.suite import make_config
from bench.workloads.text import corpus_split


class WordIds:
    """A stand-in tokenizer: each whitespace-separated word `w<i>` is token i."""

    def __call__(self, text: str, return_tensors: str, add_special_tokens: bool) -> dict[str, Any]:
        return {"input_ids": torch.tensor([[int(w[1:]) for w in text.split()]])}


def _cfg(**kw: Any) -> TrialConfig:
    base = dict(suite="t", strategy="baseline", model="smollm2-135m", workload="train", batch_size=2, seq_len=4, eval_batches=2)
    return TrialConfig(**{**base, **kw})  # type: ignore[arg-type]


@pytest.fixture
def corpus(tmp_path: Path) -> str:
    path = tmp_path / "text.txt"
    path.write_text(" ".join(f"w{i}" for i in range(200)))
    return str(path)


def test_held_out_is_the_first_tokens_and_training_never_sees_them(corpus: str) -> None:
    cfg = _cfg()
    split = corpus_split(cfg, corpus, WordIds(), rank=0, world=2, count=3)
    held = torch.cat([b.input_ids.reshape(-1) for b in split.held_out])
    assert held.tolist() == list(range(16))  # eval_batches x batch x seq
    for b in split.train:
        assert b.input_ids.shape == (2, 4) and torch.equal(b.labels, b.input_ids) and b.mask is None
        assert int(b.input_ids.min()) >= 16
        # Chunks are contiguous seq_len pieces of the text after the held-out part.
        assert all(row.tolist() == list(range(int(row[0]), int(row[0]) + 4)) and int(row[0]) % 4 == 0 for row in b.input_ids)
    assert split.protocol["tokens_scored"] == 16 and split.protocol["passes"] == 1.0


def test_ranks_get_disjoint_chunks_in_a_seeded_order(corpus: str) -> None:
    cfg = _cfg()
    a = corpus_split(cfg, corpus, WordIds(), rank=0, world=2, count=3).train
    b = corpus_split(cfg, corpus, WordIds(), rank=1, world=2, count=3).train
    starts = [{int(r[0]) for r in x.input_ids} for x in a + b]
    assert len(set().union(*starts)) == 2 * 3 * 2  # every chunk of every rank and step is distinct
    again = corpus_split(cfg, corpus, WordIds(), rank=0, world=2, count=3).train
    other = corpus_split(_cfg(seed=1), corpus, WordIds(), rank=0, world=2, count=3).train
    assert all(torch.equal(x.input_ids, y.input_ids) for x, y in zip(a, again))
    assert not all(torch.equal(x.input_ids, y.input_ids) for x, y in zip(a, other))


def test_more_steps_than_text_wrap_around(corpus: str) -> None:
    split = corpus_split(_cfg(), corpus, WordIds(), rank=0, world=1, count=40)  # 80 chunks wanted, 46 in the text
    assert len(split.train) == 40 and split.protocol["train_chunks"] == 46
    assert split.protocol["passes"] == pytest.approx(80 / 46, abs=1e-3)


def test_no_corpus_is_a_skip_with_the_reason_never_synthetic(tmp_path: Path) -> None:
    with pytest.raises(SkipTrial, match="corpus file not found"):
        corpus_split(_cfg(), str(tmp_path / "missing.txt"), WordIds(), rank=0, world=1, count=1)


def test_corpus_source_needs_a_pretrained_causal_lm() -> None:
    point = {"strategy": "baseline", "model": "gpt2-tiny", "workload": "train"}
    with pytest.raises(BenchError, match="options.source = corpus"):
        make_config("s", point, {"options": {"source": "corpus"}}, (), where="s.toml")

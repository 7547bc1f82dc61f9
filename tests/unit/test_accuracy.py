"""Accuracy measures: perplexity on crafted models, exact window accounting, fidelity, embeddings."""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from bench.contracts import TrialConfig
from bench.eval import lm
from bench.eval.accuracy import embedding_cosine, fidelity, mean_pool, perplexity, read_corpus, sliding_windows
from bench.eval.corpus import Corpus
from bench.eval.lm import CorpusOptions, CorpusPerplexity
from bench.workloads import WORKLOADS
from tests.plain import perplexity_by_hand
from tests.unit.tiny_models import tiny_gpt2


class FixedLM(nn.Module):
    """Predicts token (t + 1) mod V with probability p after token t (p = 1/V: uniform)."""

    def __init__(self, vocab: int, p: float) -> None:
        super().__init__()
        self.vocab, self.p = vocab, p
        self.calls: list[tuple[int, int]] = []  # (first token id, length) of each window seen

    def forward(self, input_ids: torch.Tensor) -> SimpleNamespace:
        self.calls.append((int(input_ids[0, 0]), input_ids.shape[1]))
        other = math.log((1 - self.p) / (self.vocab - 1))
        logits = torch.full((*input_ids.shape, self.vocab), other, dtype=torch.float64)
        logits.scatter_(-1, ((input_ids + 1) % self.vocab)[..., None], math.log(self.p))
        return SimpleNamespace(logits=logits)


def counting(n: int, vocab: int) -> torch.Tensor:
    return torch.arange(n) % vocab


def test_uniform_logits_give_perplexity_v() -> None:
    result = perplexity(FixedLM(vocab=50, p=1 / 50), counting(300, 50), window=64, stride=32, max_tokens=None)
    assert result["tokens"] == 299
    assert result["ppl"] == pytest.approx(50, rel=1e-9)
    assert result["nll_sum"] == pytest.approx(299 * math.log(50), rel=1e-9)


@pytest.mark.parametrize("p", [0.9, 0.5, 0.25])
def test_next_token_with_probability_p_gives_one_over_p(p: float) -> None:
    result = perplexity(FixedLM(vocab=20, p=p), counting(200, 20), window=32, stride=8, max_tokens=None)
    assert result["ppl"] == pytest.approx(math.exp(-math.log(p)), rel=1e-9)
    assert result["nll_mean"] == pytest.approx(-math.log(p), rel=1e-9)


@pytest.mark.parametrize("n, window, stride", [(100, 32, 16), (100, 32, 32), (97, 10, 3), (33, 64, 8), (2, 2, 1)])
def test_sliding_window_scores_every_token_once(n: int, window: int, stride: int) -> None:
    scored: list[int] = []
    windows = sliding_windows(n, window, stride)
    for begin, end, first in windows:
        assert end - begin <= window and begin % stride == 0
        scored += range(begin + first + 1, end)  # the tokens this window predicts and counts
    assert len(scored) == len(set(scored))  # never twice
    expected = n - 1 if stride < window else n - len(windows)  # no context for a window's first token
    assert len(scored) == expected
    assert windows[-1][1] == n  # stops at the window that reaches the end
    model = FixedLM(vocab=7, p=0.5)
    assert perplexity(model, counting(n, 7), window, stride, max_tokens=None)["tokens"] == expected
    assert model.calls == [(b % 7, e - b) for b, e, _ in windows]


def test_max_tokens_truncates_before_windowing() -> None:
    result = perplexity(FixedLM(vocab=7, p=0.5), counting(500, 7), window=16, stride=8, max_tokens=100)
    assert result["tokens"] == 99


def test_perplexity_matches_hugging_face_label_masking() -> None:
    """The same windows scored through transformers' own shifted, -100-masked loss."""
    model = tiny_gpt2()
    ids = torch.randint(0, 256, (90,), generator=torch.Generator().manual_seed(3))
    ours = perplexity(model, ids, window=32, stride=12, max_tokens=None)
    ppl, count = perplexity_by_hand(model, ids, window=32, stride=12)
    assert ours["tokens"] == count == 89
    assert ours["ppl"] == pytest.approx(ppl, rel=1e-5)


def _infer_options(**options: object) -> CorpusOptions:
    """The infer workload's options, built the way a suite's `options.*` are."""
    cfg = TrialConfig(suite="t", strategy="baseline", model="smollm2-135m", workload="infer", options=dict(options))
    return WORKLOADS.get("infer").options(cfg)


def test_infer_windows_do_not_overlap_unless_a_stride_is_set() -> None:
    assert _infer_options().window_stride == (512, 512)
    assert _infer_options(window=16).window_stride == (16, 16)
    assert _infer_options(window=16, stride=8).window_stride == (16, 8)


def _task(ids: torch.Tensor, **options: int) -> CorpusPerplexity:
    corpus = Corpus(name="counting", source="file", path=Path("counting.txt"), sha256="0" * 64)
    return CorpusPerplexity(
        opts=_infer_options(**options), corpus=corpus, ids=ids, device=torch.device("cpu"), reference_id={"model": "fixed"}
    )


@pytest.mark.parametrize("options, tokens, starts, extra", [
    ({"window": 16, "stride": 8}, 99, list(range(0, 89, 8)), []),  # overlapping: every token but the first
    ({"window": 16}, 93, list(range(0, 97, 16)), []),  # disjoint (the default): 7 windows, 7 unscored
    ({"window": 16, "stride": 6}, 99, list(range(0, 85, 6)), [16]),  # (16, 32) is no perplexity window
])  # fmt: skip
def test_corpus_perplexity_windows(options: dict[str, int], tokens: int, starts: list[int], extra: list[int]) -> None:
    task = _task(counting(100, 7), **options, fidelity_windows=2)
    ref = lm.reference(task, FixedLM(vocab=7, p=0.5))
    model = FixedLM(vocab=7, p=0.5)
    result = lm.score(task, model, ref, nullcontext)
    assert result.perplexity_tokens == tokens and result.perplexity == pytest.approx(2.0, rel=1e-12)
    assert result.reference_perplexity == pytest.approx(2.0, rel=1e-12)
    assert result.kl_mean == pytest.approx(0.0, abs=1e-12) and result.top1_agreement == 1.0
    # The perplexity windows only: the fidelity windows (the first 16 tokens and the next 16)
    # take their logits from the perplexity pass, unless one is no perplexity window.
    assert [first for first, _ in model.calls] == [b % 7 for b in starts] + [b % 7 for b in extra]
    window, stride = task.opts.window_stride
    assert result.protocol == {
        "corpus": "counting", "corpus_source": "file", "corpus_path": "counting.txt", "corpus_sha256": "0" * 64,
        "metric": f"{'non-overlapping' if stride == window else 'sliding'}-window perplexity; KL and top-1 agreement against the reference",
        "level": "token",
        "tokens_read": 100, "max_tokens": 16384, "window": window, "stride": stride, "fidelity_windows": 2,
        "fidelity_positions": 32, "reference": {"model": "fixed"}, "tokens_scored": tokens,
    }  # fmt: skip


@pytest.mark.parametrize("stride", [8, 16, 6])
def test_fidelity_from_the_perplexity_pass_equals_running_its_windows_alone(stride: int) -> None:
    """KL and top-1 on logits kept from the perplexity windows are those of separate forwards."""
    ids = torch.randint(0, 256, (70,), generator=torch.Generator().manual_seed(1))
    task = _task(ids, window=16, stride=stride, fidelity_windows=3)
    ref, cand = tiny_gpt2(seed=0), tiny_gpt2(seed=1)
    result = lm.score(task, cand, lm.reference(task, ref), nullcontext)
    windows = [ids[i : i + 16][None] for i in (0, 16, 32)]
    with torch.no_grad():
        r = torch.cat([ref(input_ids=w).logits for w in windows], dim=1)[0]
        c = torch.cat([cand(input_ids=w).logits for w in windows], dim=1)[0]
    plain = fidelity(r, c)
    assert plain["kl_mean"] > 1e-3
    assert result.kl_mean == pytest.approx(plain["kl_mean"], rel=1e-5)  # float32 means of the same logits
    assert result.top1_agreement == pytest.approx(plain["top1_agreement"], rel=1e-6)


def test_the_references_outputs_are_what_the_same_model_gives_as_a_candidate() -> None:
    """What lets infer score a model with no model or precision strategy from the reference's
    outputs: the candidate path on the same weights gives them to the last bit."""
    ids = torch.randint(0, 256, (90,), generator=torch.Generator().manual_seed(2))
    task = _task(ids, window=32, fidelity_windows=2)
    ref = lm.reference(task, tiny_gpt2(seed=0))
    cand = task.outputs(tiny_gpt2(seed=0), nullcontext)
    assert set(cand) == set(ref) == {"nll_sum", "tokens", "logits.0", "logits.1"}
    assert all(torch.equal(cand[k], ref[k]) for k in ref)
    assert task.compare(cand, ref) == task.compare(ref, ref)


@pytest.mark.parametrize("window, stride", [(1, 1), (8, 0), (8, 9)])
def test_bad_windows_are_rejected(window: int, stride: int) -> None:
    with pytest.raises(ValueError, match="stride"):
        perplexity(FixedLM(5, 0.5), counting(20, 5), window, stride, None)


def test_fidelity_of_identical_and_perturbed_logits() -> None:
    torch.manual_seed(0)
    ref = torch.randn(2, 10, 30)
    same = fidelity(ref, ref.clone())
    assert same == {"kl_mean": 0.0, "top1_agreement": 1.0}
    noisy = fidelity(ref, ref + 0.5 * torch.randn_like(ref))
    assert noisy["kl_mean"] > 0 and noisy["top1_agreement"] < 1.0


def test_fidelity_kl_is_exact_on_two_tokens() -> None:
    ref = torch.log(torch.tensor([[0.75, 0.25]]))
    cand = torch.log(torch.tensor([[0.5, 0.5]]))
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert fidelity(ref, cand)["kl_mean"] == pytest.approx(kl, rel=1e-6)
    assert fidelity(ref, cand)["top1_agreement"] == 1.0  # argmax ties go to index 0 on both sides


def test_fidelity_of_a_perturbed_model() -> None:
    model = tiny_gpt2()
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(ids).logits
        assert fidelity(ref, model(ids).logits)["kl_mean"] == 0.0
        model.transformer.h[0].mlp.c_fc.weight.add_(0.05 * torch.randn_like(model.transformer.h[0].mlp.c_fc.weight))
        assert fidelity(ref, model(ids).logits)["kl_mean"] > 0


def test_mean_pooling_ignores_padding_and_normalises() -> None:
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    pooled = mean_pool(hidden, mask)
    torch.testing.assert_close(pooled, torch.tensor([[2.0, 2.0]]) / math.sqrt(8))
    assert embedding_cosine(pooled, pooled).item() == pytest.approx(1.0)
    assert embedding_cosine(pooled, -pooled).item() == pytest.approx(-1.0)


class CharTokenizer:
    """One token per `width` characters: enough of a tokenizer for `read_corpus`."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.reads: list[int] = []

    def __call__(self, text: str, return_tensors: str, add_special_tokens: bool) -> dict[str, torch.Tensor]:
        self.reads.append(len(text))
        ids = [ord(text[i]) for i in range(0, len(text), self.width)]
        return {"input_ids": torch.tensor([ids])}


def test_read_corpus_reads_a_prefix_and_truncates(tmp_path: Path) -> None:
    path = tmp_path / "text.txt"
    path.write_text("abcdefghij" * 1000, encoding="utf-8")
    tok = CharTokenizer(width=1)
    ids = read_corpus(path, tok, max_tokens=25)
    assert ids.tolist() == [ord(c) for c in ("abcdefghij" * 3)[:25]]
    assert tok.reads == [25 * 8]  # a prefix, not the whole 10,000 characters
    wide = CharTokenizer(width=20)  # 20 characters per token: the first read is too short
    assert read_corpus(path, wide, max_tokens=30).numel() == 30 and wide.reads == [240, 480, 960]
    assert read_corpus(path, CharTokenizer(1), max_tokens=None).numel() == 10_000
    assert read_corpus(path, CharTokenizer(1), max_tokens=20_000).numel() == 10_000  # the whole file

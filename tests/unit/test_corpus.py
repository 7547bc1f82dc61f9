"""Corpus loading: a local file, the local WikiText-2 copy, the hub (its downloader replaced), or a reason."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from bench.contracts import TrialConfig
from bench.distributed.env import RankEnv
from bench.eval import corpus
from bench.models.zoo import MODELS
from bench.workloads import infer

REAL_DOWNLOAD = corpus.download  # before any fixture replaces it
ROWS = ["", " = Heading = \n", "", " The first line of text , with <unk> . \n", " Another line . \n"]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No local WikiText copy, an empty cache, and a downloader that fails unless a test replaces it."""
    monkeypatch.setenv("COMMBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(corpus.WIKITEXT_ENV, raising=False)
    monkeypatch.delenv("COMMBENCH_ALLOW_HUB", raising=False)
    monkeypatch.setattr(corpus, "SHARED_WIKITEXT", tmp_path / "no-shared" / "valid.txt")

    def offline(repo: str, filename: str) -> str:
        raise OSError("offline and not in the hub cache")

    monkeypatch.setattr(corpus, "download", offline)


def _parquet(path: Path) -> Path:
    pq.write_table(pa.table({"text": ROWS}), path)
    return path


def test_a_local_file_is_read_and_identified(tmp_path: Path) -> None:
    text = tmp_path / "mine.txt"
    text.write_text("hello world\n")
    found = corpus.find(str(text))
    assert isinstance(found, corpus.Corpus) and found.source == "file" and found.name == "mine.txt"
    assert found.sha256 == hashlib.sha256(b"hello world\n").hexdigest()
    assert corpus.find(str(tmp_path / "missing.txt")) == f"corpus file not found: {tmp_path / 'missing.txt'} (options.corpus)"


def test_the_local_wikitext_copy_comes_before_the_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "valid.txt"
    copy.write_text(" = Valid = \n")
    monkeypatch.setenv(corpus.WIKITEXT_ENV, str(copy))
    found = corpus.find(None)
    assert isinstance(found, corpus.Corpus) and (found.source, found.path, found.name) == ("local copy", copy, corpus.WIKITEXT)


def test_the_hub_parquet_becomes_a_cached_text_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []

    def fake(repo: str, filename: str) -> str:
        calls.append((repo, filename))
        return str(_parquet(tmp_path / "validation.parquet"))

    monkeypatch.setattr(corpus, "download", fake)
    for asked in (None, corpus.HUB):
        found = corpus.find(asked)
        assert isinstance(found, corpus.Corpus) and found.source == "hub" and found.name == corpus.WIKITEXT
        assert found.path.read_text(encoding="utf-8") == "".join(ROWS)
        assert found.path.is_relative_to(tmp_path / "cache" / "corpus")
        assert found.sha256 == hashlib.sha256("".join(ROWS).encode()).hexdigest()
    assert calls == [("Salesforce/wikitext", "wikitext-2-v1/validation-00000-of-00001.parquet")]  # then from the cache


def test_without_any_corpus_the_reason_names_every_place() -> None:
    reason = corpus.find(None)
    assert isinstance(reason, str) and reason.startswith("no corpus: no local copy at ")
    assert "hub Salesforce/wikitext/wikitext-2-v1/validation-00000-of-00001.parquet unavailable" in reason
    assert "COMMBENCH_ALLOW_HUB=1" in reason and "offline and not in the hub cache" in reason
    assert reason.endswith("set options.corpus to a text file")


def test_the_real_downloader_stays_offline_unless_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **kw: seen.append(kw) or "/x.parquet")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    REAL_DOWNLOAD("r", "f")
    monkeypatch.setenv("COMMBENCH_ALLOW_HUB", "1")
    REAL_DOWNLOAD("r", "f")
    assert [kw["local_files_only"] for kw in seen] == [True, False] and seen[0]["repo_type"] == "dataset"


def test_minilm_without_a_corpus_has_null_cosine_with_the_reason() -> None:
    spec = MODELS.get("minilm-l6")
    cfg = TrialConfig(suite="t", strategy="baseline", model="minilm-l6", workload="infer", options={"corpus": "/no/such.txt"})
    env = RankEnv(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend="gloo")
    task = infer.accuracy_task(cfg, infer.WORKLOAD.options(cfg), spec, env, tokenizer=None)
    assert task == "corpus file not found: /no/such.txt (options.corpus)"
    acc = infer._no_accuracy(spec, task)
    assert acc.embedding_cosine is None and acc.null_reasons == {"embedding_cosine": task}

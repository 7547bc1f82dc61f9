"""Where accuracy text comes from: a local file, the local WikiText-2 copy, or the Hugging Face hub.

`options.corpus` of the infer workload picks one:
- a path: that text file (missing: no corpus, and the row says why);
- unset: WikiText-2 validation, from $COMMBENCH_WIKITEXT or ../shared/data/wikitext-2/valid.txt
  (the tokenized form, with `<unk>`), else from the hub;
- `"hub"`: WikiText-2 validation from the hub only.
The hub path reads the `Salesforce/wikitext` dataset's `wikitext-2-v1` validation parquet (the
same tokenized form) through `huggingface_hub`, whose cache keeps the download; its rows are
concatenated into a text file under $COMMBENCH_CACHE/corpus/. It downloads only with
$COMMBENCH_ALLOW_HUB=1 and the hub not in offline mode (as pretrained weights do); otherwise it
uses the hub cache or reports that there is no corpus. Each corpus is identified in the results
by its name, where it came from and the SHA-256 of the text file read.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import cache
from bench.models.pretrained import ALLOW_HUB_ENV

WIKITEXT_ENV = "COMMBENCH_WIKITEXT"
WIKITEXT = "wikitext-2-v1 validation"
SHARED_WIKITEXT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "wikitext-2" / "valid.txt"
HUB = "hub"  # options.corpus value that asks for the hub
HUB_REPO = "Salesforce/wikitext"
HUB_FILE = "wikitext-2-v1/validation-00000-of-00001.parquet"


@dataclass(frozen=True, slots=True)
class Corpus:
    """A text file to measure accuracy on, and what identifies it."""

    name: str
    source: str  # "file" (options.corpus), "local copy" (WikiText-2 on disk) or "hub"
    path: Path
    sha256: str

    def protocol(self) -> dict[str, Any]:
        return {"corpus": self.name, "corpus_source": self.source, "corpus_path": str(self.path), "corpus_sha256": self.sha256}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _corpus(path: Path, name: str, source: str) -> Corpus:
    return Corpus(name=name, source=source, path=path, sha256=sha256_file(path))


def find(corpus: str | None) -> Corpus | str:
    """The corpus `options.corpus` names (see the module docstring), or why there is none."""
    if corpus is not None and corpus != HUB:
        path = Path(corpus)
        return _corpus(path, path.name, "file") if path.is_file() else f"corpus file not found: {path} (options.corpus)"
    tried = []
    if corpus is None:
        local = Path(os.environ.get(WIKITEXT_ENV) or SHARED_WIKITEXT)
        if local.is_file():
            return _corpus(local, WIKITEXT, "local copy")
        tried.append(f"no local copy at {local} (${WIKITEXT_ENV})")
    hub = from_hub()
    if isinstance(hub, Path):
        return _corpus(hub, WIKITEXT, HUB)
    tried.append(hub)
    return f"no corpus: {'; '.join(tried)}; set options.corpus to a text file"


def from_hub() -> Path | str:
    """The hub's WikiText-2 validation as a cached text file, or why it cannot be had."""
    text_path = cache.path("corpus", HUB_REPO.replace("/", "--"), HUB_FILE.removesuffix(".parquet") + ".txt")
    if text_path.is_file():
        return text_path
    try:
        parquet = download(HUB_REPO, HUB_FILE)
    except Exception as exc:  # offline, not cached, or any hub error: a reason, not a crash
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        allow = "" if hub_allowed() else f" (downloads need {ALLOW_HUB_ENV}=1 and the hub online)"
        return f"hub {HUB_REPO}/{HUB_FILE} unavailable{allow}: {first}"
    text = parquet_text(Path(parquet))
    cache.write_atomic(text_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return text_path


def hub_allowed() -> bool:
    from huggingface_hub.constants import is_offline_mode

    return os.environ.get(ALLOW_HUB_ENV) == "1" and not is_offline_mode()


def download(repo: str, filename: str) -> str:
    """A dataset file through huggingface_hub's cache; from the network only when allowed."""
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo, filename, repo_type="dataset", local_files_only=not hub_allowed())


def parquet_text(path: Path) -> str:
    """The `text` column of a WikiText parquet file, rows concatenated (each row is a line)."""
    import pyarrow.parquet as pq

    return "".join(pq.read_table(path, columns=["text"]).column("text").to_pylist())

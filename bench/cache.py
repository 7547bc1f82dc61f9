"""The on-disk cache every room shares: its root ($COMMBENCH_CACHE) and atomic writes into it.

Holds what is expensive to recompute and safe to reuse: dequantized pretrained weights
(`pretrained/`), corpora fetched from the hub (`corpus/`) and the reference model's outputs
that accuracy is measured against (`reference/`). Writers go through `write_atomic`, so a
crash or a concurrent writer never leaves half an entry under the final name; readers
still verify what they read (a disk can corrupt a whole file too).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.config import canonical_json

CACHE_ENV = "COMMBENCH_CACHE"


def root() -> Path:
    """$COMMBENCH_CACHE, else ~/.cache/commbench."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "commbench")


def path(*parts: str) -> Path:
    """A path under the cache root (not created)."""
    return root().joinpath(*parts)


def key_hash(key: dict[str, Any]) -> str:
    """A stable name for a cache entry: SHA-256 of the key's canonical JSON (first 24 hex digits)."""
    return hashlib.sha256(canonical_json(key).encode()).hexdigest()[:24]


def write_atomic(target: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` to a temp file beside `target`, then rename it over `target`.

    The rename is atomic on one filesystem: readers see the old entry or the whole new one.
    Two ranks writing the same entry both succeed; the last rename wins with equal content.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)

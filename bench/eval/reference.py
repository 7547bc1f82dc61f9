"""The reference model's outputs, computed once per (model, weights, inputs, protocol) and cached on disk.

Fidelity compares a compressed model with the uncompressed reference. Keeping the reference
in memory beside the candidate would bill its bytes to the candidate's peak memory, and
running it again for every strategy of a suite costs as much as the candidate itself. So
the reference runs first, its outputs (logits, embeddings, perplexity sums) go to a file
under $COMMBENCH_CACHE/reference/ named by a hash of everything that determines them, the
reference is freed, and the candidate is measured alone; its scoring reads the file back
after the window, memory-mapped.

An entry is written atomically and carries its full key and a SHA-256 of its tensors; one
whose file does not load, whose key differs or whose digest does not match is recomputed,
never trusted. The key holds torch/transformers versions and the device, since logits
differ between them in the last bits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench import cache
from bench.config import canonical_json

FORMAT = 2  # bump when what an entry holds, or how it is computed, changes (2: held-out entries hold eval_loss)
Outputs = dict[str, torch.Tensor]


@dataclass(frozen=True, slots=True)
class Entry:
    """A verified cache entry: where it is, its key's hash, and whether this trial computed it."""

    path: Path
    key_hash: str
    status: str  # "hit", "computed" or "recomputed: <why the old entry was rejected>"


def full_key(key: dict[str, Any], device: torch.device) -> dict[str, Any]:
    import transformers

    return {"format": FORMAT, "torch": torch.__version__, "transformers": transformers.__version__, "device": device.type, **key}


def digest(tensors: Outputs) -> str:
    """SHA-256 over every name, dtype, shape and byte of `tensors`."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def check(path: Path, key_json: str) -> str | None:
    """None when the entry at `path` loads, has this key and an intact digest; else why not."""
    try:
        blob = torch.load(path, mmap=True, weights_only=True)
    except Exception as exc:  # truncated or garbage: any unpickling error means "corrupt"
        return f"unreadable ({type(exc).__name__})"
    if not isinstance(blob, dict) or set(blob) != {"key", "digest", "tensors"}:
        return "not a reference entry"
    if blob["key"] != key_json:
        return "key mismatch"
    if blob["digest"] != digest(blob["tensors"]):
        return "digest mismatch"
    return None


def ensure(key: dict[str, Any], device: torch.device, compute: Callable[[], Outputs]) -> Entry:
    """The verified entry for `key`, running `compute()` (the reference) only when there is none.

    `compute` should build the reference inside itself, so that it is freed when it returns.
    """
    whole = full_key(key, device)
    name = cache.key_hash(whole)
    path = cache.path("reference", f"{name}.pt")
    key_json = canonical_json(whole)
    why = check(path, key_json) if path.exists() else "missing"
    if why is None:
        return Entry(path, name, "hit")
    tensors = {k: v.detach().cpu() for k, v in compute().items()}
    blob = {"key": key_json, "digest": digest(tensors), "tensors": tensors}
    cache.write_atomic(path, lambda tmp: torch.save(blob, tmp))
    return Entry(path, name, "computed" if why == "missing" else f"recomputed: {why}")


def load(entry: Entry) -> Outputs:
    """The entry's tensors, memory-mapped (read after the measured window)."""
    return torch.load(entry.path, mmap=True, weights_only=True)["tensors"]

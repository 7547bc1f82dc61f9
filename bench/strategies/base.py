"""The strategy contract: typed params, an aspect (what it changes) that fixes when it applies, and the trial state it edits."""

from __future__ import annotations

import dataclasses
from abc import ABC
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from bench.strategies.metrics import Metric, Metrics

if TYPE_CHECKING:
    from bench.contracts import Parallel, TrialConfig
    from bench.distributed.env import RankEnv
    from bench.models.zoo import ModelSpec
    from bench.strategies.collation import Collation


class Aspect(IntEnum):
    """What a strategy changes, which fixes when it applies. Compositions apply aspects in this order.

    DATA sets the input pipeline (how a batch is collated and what dtype its ids travel
    in), fixed before any model exists, as torchtitan builds its dataloader before the
    model; MODEL transforms weights (prune, low-rank, quantize, cast); PRECISION sets the
    numeric policy of a step; LAYOUT configures or replaces the parallel wrapper (DDP is
    the default); COMM registers a DDP communication hook; LOOP changes the training loop.
    """

    NONE = 0
    DATA = 5
    MODEL = 10
    PRECISION = 20
    LAYOUT = 30
    COMM = 40
    LOOP = 50


@dataclass(kw_only=True, slots=True, frozen=True)
class NoParams:
    """For strategies without parameters."""


@dataclass(kw_only=True)
class TrialState:
    """What a rank builds for one trial; strategies edit it in the order of their aspects.

    The workload owns it: it builds `model`, applies the MODEL/PRECISION/LAYOUT/COMM/LOOP
    strategies in order, then runs. Strategies record what they measured about
    themselves (achieved sparsity, compression stats) in `metrics`, under the names they
    declare (`Strategy.metrics`); their scratch state stays on the strategy instance.
    """

    cfg: TrialConfig
    env: RankEnv
    spec: ModelSpec
    model: nn.Module
    wrapped: nn.Module | None = None  # the parallel wrapper (DDP, FSDP, ...) once applied
    wrapper: str | None = None  # its name, e.g. "ddp"
    # Set by the layout: a context under which backward does not synchronise gradients
    # (DDP's no_sync, FSDP2's set_requires_gradient_sync(False)); None: nothing to skip.
    skip_sync: Callable[[], AbstractContextManager[Any]] | None = None
    # Set by tensor parallel when it builds a 2-D mesh: the data-parallel sub-mesh FSDP shards over.
    dp_mesh: Any = None
    # Which data-parallel replica this rank is: ranks of one tensor-parallel group or one
    # pipeline must read the same batch. None: every rank is its own replica (its rank).
    data_rank: int | None = None
    # Set by a layout that owns the step (pipeline parallel): forward and backward of one batch,
    # returning its mean loss (None on ranks that do not compute it), and one held-out batch's loss.
    train_batch: Callable[[Any], torch.Tensor | None] | None = None
    eval_batch: Callable[[Any], float | None] | None = None
    # Set by tensor parallel's loss parallel: the context the loss and its backward must run in
    # (torch's `loss_parallel()`: cross-entropy on logits sharded on the vocab dim). None: none.
    loss_context: Callable[[], AbstractContextManager[Any]] | None = None
    ddp_options: dict[str, Any] = field(default_factory=dict)
    autocast_dtype: torch.dtype | None = None
    # fp16 autocast's loss scaling (torch.amp.GradScaler); None: gradients are not scaled.
    grad_scaler: torch.amp.GradScaler | None = None
    # Set by a layout whose traffic the flight recorder cannot see (nn.DataParallel's
    # device-to-device copies): why, so the row's logical bytes are null with it, not 0.
    comm_invisible: str | None = None
    # The input pipeline (DATA strategies): how documents become a batch, and the id dtype
    # on the wire. None: the workload's own batches (train and infer make theirs locally).
    collation: Collation | None = None
    id_dtype: torch.dtype = torch.int64
    micro_steps: int = 1  # gradient accumulation: micro-batches per optimizer step
    comm_hook: str | None = None
    comm_hook_state: Any = None
    comm_hook_recording: Any = None  # the registered hook's `replay.Recording` (its last step's buckets)
    parallel: Parallel | None = None  # the layout's real degrees; None: data parallel over the world
    metrics: Metrics = field(default_factory=Metrics)

    @property
    def ddp_buffer_bytes(self) -> int:
        """Bytes DDP broadcasts from rank 0 before every forward (even at world size 1)."""
        if not self.ddp_options.get("broadcast_buffers", True):
            return 0
        return sum(b.numel() * b.element_size() for b in self.model.buffers())

    @property
    def train_module(self) -> nn.Module:
        return self.wrapped if self.wrapped is not None else self.model

    def micro_step(self, last: bool) -> AbstractContextManager[Any]:
        """Context for one micro-batch's forward/backward: gradients sync on the `last` only.

        Gradient accumulation calls this without knowing the layout (DDP, FSDP2, ...).
        """
        if last or self.skip_sync is None:
            return nullcontext()
        return self.skip_sync()

    def loss_scope(self) -> AbstractContextManager[Any]:
        """Context for computing a loss and its backward (`loss_context`, or nothing)."""
        return nullcontext() if self.loss_context is None else self.loss_context()

    def autocast(self) -> AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.env.device.type, dtype=self.autocast_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """`loss.backward()`, through the grad scaler when fp16 autocast set one."""
        (self.grad_scaler.scale(loss) if self.grad_scaler is not None else loss).backward()

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """`optimizer.step()`; with a grad scaler, unscale, skip the step on inf/NaN and update the scale."""
        if self.grad_scaler is None:
            optimizer.step()
            return
        self.grad_scaler.step(optimizer)
        self.grad_scaler.update()


class Strategy(ABC):
    """One named, parameterised technique.

    Subclasses set the class attributes and override `apply` (and `skip_reason` when
    the technique cannot run somewhere; `analytic_ops`, the cost-model adapter, when it
    sets a step's traffic). Adding a strategy means one class in the file of its family
    (a new family is a new file, found by `import_submodules`) with its
    `@STRATEGIES.register(...)` line.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    aspect: ClassVar[Aspect]
    # Position inside the aspect: the written order of a composition must not decrease.
    order: ClassVar[int] = 0
    Params: ClassVar[type] = NoParams
    # Workloads the strategy changes; on others its row is `skipped` as not applicable.
    workloads: ClassVar[frozenset[str]] = frozenset({"train", "infer", "transfer"})
    # Strategies sharing a group are mutually exclusive (e.g. two DDP comm hooks).
    exclusive: ClassVar[str | None] = None
    # A LAYOUT strategy that replaces DDP; comm hooks need DDP.
    replaces_ddp: ClassVar[bool] = False
    # A strategy that configures DDP (its comm hook, its buckets): invalid with a layout that replaces it.
    needs_ddp: ClassVar[bool] = False
    # The default of its `exclusive` group: a composition without another member of the group
    # gets it (`Composition.with_defaults`), and it never shows in a canonical name.
    implicit: ClassVar[bool] = False
    # What `apply` and `finish` may write into `state.metrics` (checked on write, and against
    # the schema when the class registers).
    metrics: ClassVar[tuple[Metric, ...]] = ()

    def __init__(self, params: Any) -> None:
        self.params = params

    def skip_reason(self, cfg: TrialConfig) -> str | None:
        """Why this strategy cannot run for `cfg` here, known before launching; None if it can."""
        return None

    def check(self, cfg: TrialConfig, others: list[str]) -> None:
        """Raise BenchError if `cfg` can never run with this strategy beside `others` (names), before launch.

        E.g. parallel degrees that do not multiply to the world size. Unlike `skip_reason`,
        this is the user's mistake, whatever the machine.
        """

    def apply(self, state: TrialState) -> None:
        """Edit `state` when its aspect's turn comes (called on every rank)."""

    def finish(self, state: TrialState) -> None:
        """Record what the strategy measured about itself in `state.metrics` (declared in `metrics`), once, after the run.

        Called outside every timed step, so reading hook statistics costs the steps nothing.
        """

    def analytic_ops(self, state: TrialState) -> dict[str, float] | None:
        """Cost model of one step's traffic when this strategy sets it: op -> message bytes per rank.

        COMM and LAYOUT strategies override this; None means "no opinion" (the default
        layout's model applies). Message bytes follow nccl-tests' S, like the measurements.
        """
        return None

    # --- naming -------------------------------------------------------------------
    def param_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.params)

    def canonical(self) -> str:
        """`name(k=v,...)` listing only the params that differ from their defaults."""
        diffs = []
        for f in dataclasses.fields(self.params):
            value = getattr(self.params, f.name)
            default = f.default if f.default is not dataclasses.MISSING else object()
            if value != default:
                diffs.append(f"{f.name}={format_value(value)}")
        return f"{self.name}({','.join(diffs)})" if diffs else self.name

    def __repr__(self) -> str:
        return self.canonical()


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ";".join(format_value(v) for v in value) + "]"
    return str(value)


def aspect_strategies(strategies: tuple[Strategy, ...], aspect: Aspect) -> Iterator[Strategy]:
    return (s for s in strategies if s.aspect == aspect)

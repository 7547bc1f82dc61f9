"""The fully resolved configuration of one trial, as stored with its result row."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any

from bench.config import canonical_json

DEVICES = ("cpu", "cuda")


@dataclass(kw_only=True, slots=True, frozen=True)
class DataConfig:
    """The synthetic language: a seeded sparse Markov chain (see bench/workloads/data.py)."""

    states: int = 256  # tokens the chain emits (ids 0..states-1), at most the model's vocab
    branching: int = 4  # successors per state
    alpha: float = 1.0  # Dirichlet concentration of each row's probabilities
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.states < 2:
            raise ValueError("data.states must be >= 2")
        if not 1 <= self.branching <= self.states:
            raise ValueError("data.branching must be in [1, data.states]")
        if self.alpha <= 0:
            raise ValueError("data.alpha must be > 0")


@dataclass(kw_only=True, slots=True, frozen=True)
class TrialConfig:
    """Everything that determines one trial; its hash is the trial id.

    Stored as JSON in the `config` column so a result stays reproducible after its
    suite file changes.
    """

    suite: str
    strategy: str  # canonical composition string, e.g. "bf16_autocast+powersgd(rank=4)"
    model: str
    workload: str
    device: str = "cpu"
    world_size: int = 1
    batch_size: int = 8
    seq_len: int = 64
    steps: int = 20
    warmup_steps: int = 3
    seed: int = 0
    lr: float = 1e-3
    eval_batches: int = 4
    gen_tokens: int = 16
    loss_curve_points: int = 50
    # Extra steps after the measured window run under torch.profiler, for per-collective
    # timings (algbw/busbw) and the compute/communication overlap. 0 turns it off.
    profile_steps: int = 2
    # Byte accounting (flight recorder, p2p interposer, socket counters). Off only to
    # measure what accounting itself costs (`python -m bench.comm.overhead`).
    track_comm: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    options: dict[str, Any] = field(default_factory=dict)  # workload-specific settings
    threads_per_rank: int | None = None  # None: cores // world_size
    timeout_s: float = 600.0
    plugins: tuple[str, ...] = ()  # modules imported in every rank (custom strategies)

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        for name in ("world_size", "batch_size", "seq_len", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if min(self.warmup_steps, self.eval_batches, self.gen_tokens, self.profile_steps) < 0:
            raise ValueError("warmup_steps, eval_batches, gen_tokens and profile_steps must be >= 0")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["plugins"] = list(self.plugins)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialConfig:
        d = dict(d)
        d["data"] = DataConfig(**d.get("data", {}))
        d["plugins"] = tuple(d.get("plugins", ()))
        return cls(**d)

    @property
    def trial_id(self) -> str:
        """Hash of what determines the result (not the timeout, which only bounds it)."""
        d = self.to_dict()
        d.pop("timeout_s")
        return hashlib.sha1(canonical_json(d).encode()).hexdigest()[:16]

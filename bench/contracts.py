"""Typed contracts between rooms: the trial config every room reads, and what each rank returns.

This module imports no room of the package (only the top-level `config` helpers), so every
room may import it: the runner builds a `TrialConfig`, workloads and strategies read it,
and each rank returns a `RankResult` that the runner aggregates. Dicts exist only at the
process boundary (`RankResult.to_dict` / `rank_output_from_dict`), where a missing or
unknown key fails loudly instead of turning into a silent default.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from bench.config import canonical_json

DEVICES = ("cpu", "cuda")
# Thread placement of a CPU rank (bench/distributed/env.py `init_rank` applies it):
# "compute" pins the compute thread after init_process_group (gloo's threads stay free),
# "all" pins before it (gloo's threads share the rank's cores), "none" pins nothing.
PinPolicy = Literal["compute", "all", "none"]
PIN_POLICIES: tuple[str, ...] = get_args(PinPolicy)
# What the measurement code measures, as a version: stored in every row, and a sweep reuses
# only rows of this version (older ones are rerun). Bump it when a change makes a stored
# number mean something else, even if no column changes shape (that is SCHEMA_VERSION).
# 2: infer measures the compressed model without the reference resident; transfer's step
#    includes rank 0's encode; tokens/s of token-free workloads is null, not 0.
# 3: CPU ranks pin only their compute thread, after init_process_group (`pin="compute"`);
#    before, gloo's threads inherited the rank's one core and every collective slowed down.
#    The sign codec sends exact zeros as 0 by default (a second bit-plane: other bytes and
#    other training); the masked Bayes floor is computed for any number of states.
# 4: infer's perplexity defaults to non-overlapping windows (stride = window, the GPTQ protocol)
#    instead of stride = window // 2: the same tokens read, half the forwards, a higher perplexity.
#    And a sweep's trial may run several launches (`repeats`): latency_p50_s, tokens_per_s,
#    algbw/busbw are then the median over launches of each launch's value, with a CI over
#    launches; latency_samples_s holds every launch's steps.
MEASUREMENT_VERSION = 4
# Config fields that do not change what is measured: left out of the case (and the history key).
# `seed` draws one sample of a case (model init, data stream, codec noise): rows of several
# seeds are repeats of one case, pooled by the comparator and averaged by the report.
# The repeat settings say how many launches measure the case, not what is measured.
NOT_IN_CASE = ("suite", "timeout_s", "plugins", "seed", "repeats", "repeat_target", "repeat_max", "repeat_max_s")
_PLACEMENT_DEFAULTS: dict[str, Any] = {"nnodes": 1, "network": None}
# Left out of the trial id at their defaults, so one-launch trials keep the ids they had.
_REPEAT_DEFAULTS: dict[str, Any] = {"repeats": 1, "repeat_target": 0.03, "repeat_max": 10, "repeat_max_s": None}
AUTO = "auto"
MIN_AUTO_LAUNCHES = 3  # a launch-level CI needs three launches (bench.compare.stats)


@dataclass(kw_only=True, slots=True, frozen=True)
class DataConfig:
    """The synthetic language: a seeded sparse Markov chain (see bench/workloads/sources.py)."""

    states: int = 256  # tokens the chain emits (ids 0..states-1), at most the model's vocab - 1
    branching: int = 4  # successors per state
    alpha: float = 1.0  # Dirichlet concentration of each row's probabilities
    # None: successors drawn uniformly; s: drawn with popularity (j + 1)^-s and every row
    # smoothed with a Zipf(s) background of weight `background`: a Zipf-like marginal over all states.
    zipf: float | None = None
    background: float = 0.25
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.states < 2:
            raise ValueError("data.states must be >= 2")
        if not 1 <= self.branching <= self.states:
            raise ValueError("data.branching must be in [1, data.states]")
        if self.alpha <= 0:
            raise ValueError("data.alpha must be > 0")
        if self.zipf is not None and not 0 < self.zipf <= 4:
            raise ValueError("data.zipf must be in (0, 4] (or unset for uniform successors)")
        if not 0 < self.background < 1:
            raise ValueError("data.background must be in (0, 1)")


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
    # measure what accounting itself costs (`python -m bench.benchmarks.overhead`).
    track_comm: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    options: dict[str, Any] = field(default_factory=dict)  # workload-specific settings
    threads_per_rank: int | None = None  # None: cores // world_size
    pin: PinPolicy = "compute"  # thread placement on CPU (see PIN_POLICIES)
    timeout_s: float = 600.0
    plugins: tuple[str, ...] = ()  # modules imported in every rank (custom strategies)
    # Nodes the world_size ranks are spread over (world_size // nnodes per node): on a real
    # cluster (`--nnodes`), or as network namespaces on this machine when `network` is set.
    nnodes: int = 1
    # The emulated link between two namespace "nodes" (bench/network/spec.py), e.g. "1gbit".
    network: str | None = None
    # Launches of the trial in a sweep, each a whole run of its ranks: an integer, or "auto":
    # launch again (in the sweep's next round) until the 95% CI of the step p50 over
    # launches is within ±repeat_target of it, or until repeat_max launches or repeat_max_s
    # seconds of this trial's launches (bench/runner/repeats.py).
    repeats: int | Literal["auto"] = 1
    repeat_target: float = 0.03
    repeat_max: int = 10
    repeat_max_s: float | None = None

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
        if self.nnodes < 1 or self.world_size % self.nnodes:
            raise ValueError(f"nnodes must be >= 1 and divide world_size ({self.world_size}), got {self.nnodes}")
        if self.pin not in PIN_POLICIES:
            raise ValueError(f"pin must be one of {', '.join(PIN_POLICIES)}, got {self.pin!r}")
        if self.repeats != AUTO and (isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 1):
            raise ValueError(f"repeats must be an integer >= 1 or \"auto\", got {self.repeats!r}")
        if not 0 < self.repeat_target < 1:
            raise ValueError(f"repeat_target must be in (0, 1) (a relative CI half-width, 0.03: ±3%), got {self.repeat_target}")
        if self.repeat_max < 1 or (self.repeats == AUTO and self.repeat_max < MIN_AUTO_LAUNCHES):
            raise ValueError(f"repeat_max must be >= {MIN_AUTO_LAUNCHES} with repeats = \"auto\" (a CI needs "
                             f"{MIN_AUTO_LAUNCHES} launches), got {self.repeat_max}")
        if self.repeat_max_s is not None and self.repeat_max_s <= 0:
            raise ValueError(f"repeat_max_s must be > 0, got {self.repeat_max_s}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["plugins"] = list(self.plugins)
        return d

    def _identity(self) -> dict[str, Any]:
        # Placement fields at their defaults are left out, so trials of one node keep the
        # ids (and history keys) they had before these fields existed.
        d = self.to_dict()
        for name, default in {**_PLACEMENT_DEFAULTS, **_REPEAT_DEFAULTS}.items():
            if d[name] == default:
                d.pop(name)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialConfig:
        d = dict(d)
        d["data"] = DataConfig(**d.get("data", {}))
        d["plugins"] = tuple(d.get("plugins", ()))
        return cls(**d)

    def case(self) -> dict[str, Any]:
        """The part of the config that defines *what* is measured (hashed into the history key)."""
        d = self._identity()
        for k in NOT_IN_CASE:
            d.pop(k, None)  # repeat settings at their defaults are already out
        return d

    @property
    def trial_id(self) -> str:
        """Hash of what determines the result (not the timeout, which only bounds it)."""
        d = self._identity()
        d.pop("timeout_s")
        return hashlib.sha1(canonical_json(d).encode()).hexdigest()[:16]


# --- what a rank returns ---------------------------------------------------------------


@dataclass(kw_only=True, slots=True)
class MemoryPeaks:
    """One rank's memory over the measured window, in bytes; None with a reason when unreadable."""

    rss_end: int
    rss_peak: int | None
    rss_peak_method: str  # "kernel-VmHWM" (exact) or "psutil-sampled-5ms" (a lower bound)
    cuda_max_allocated: int | None
    cuda_max_reserved: int | None
    nvml_process_used: int | None
    nvml_device_used: int | None
    null_reasons: dict[str, str] = field(default_factory=dict)


@dataclass(kw_only=True, slots=True)
class GpuUtil:
    """NVML utilisation of one rank's GPU, sampled over its window; `reason` when not measured.

    Each sample is NVML's `utilization.gpu`: the percent of time over the driver's last
    sample period (1/6 s to 1 s, by product) during which one or more kernels ran. It says
    whether the GPU was busy, not how many of its SMs were.
    """

    samples_percent: list[float]
    interval_s: float
    reason: str | None = None


@dataclass(kw_only=True, slots=True)
class WindowResult:
    """What one rank measured inside its window: step times, memory, collectives and wire bytes.

    `comm_records` are `CollectiveRecord`s as dicts and `comm_summary` their per-op totals
    (`bench.comm.accounting`); both are None-free only when byte accounting is on, and
    `comm_reason` / `wire_reason` say why not.
    """

    step_times_s: list[float]
    memory: MemoryPeaks
    comm_records: list[dict[str, Any]]
    comm_summary: dict[str, Any] | None
    wire: dict[str, int] | None
    comm_reason: str | None = None
    wire_reason: str | None = None
    gpu_util: GpuUtil | None = None  # None: not sampled (a window built outside `Window`)
    # Counter deltas (rx/tx bytes and packets) of the emulated link's interface over the
    # window, read by the node's first local rank; None elsewhere, with `link_reason`.
    link: dict[str, int] | None = None
    link_reason: str | None = None


@dataclass(kw_only=True, slots=True)
class Accuracy:
    """Accuracy of the trained or compressed model; each field None where it does not apply.

    `protocol` says how it was measured (corpus and its SHA-256, tokens, window, stride,
    level, the reference's identity: the `accuracy_protocol` column); `null_reasons` says
    why a field that applies is None (e.g. no corpus).
    """

    eval_loss: float | None = None
    eval_loss_before: float | None = None  # train on real text: held-out loss before the first step
    bayes_loss: float | None = None
    entropy_rate: float | None = None
    perplexity: float | None = None
    perplexity_tokens: int | None = None
    reference_perplexity: float | None = None
    kl_mean: float | None = None
    top1_agreement: float | None = None
    embedding_cosine: float | None = None
    protocol: dict[str, Any] | None = None
    null_reasons: dict[str, str] = field(default_factory=dict)


@dataclass(kw_only=True, slots=True, frozen=True)
class Parallel:
    """The real degrees of the rank's layout: data, tensor and pipeline parallel."""

    dp: int
    tp: int = 1
    pp: int = 1


@dataclass(kw_only=True, slots=True)
class Generate:
    """Greedy `generate` throughput of one rank (infer, causal LMs)."""

    new_tokens: int
    batch: int
    times_s: list[float]
    tokens_per_s: float


@dataclass(kw_only=True, slots=True)
class Profile:
    """The profiler pass after the window: per-op collective timings and compute overlap."""

    steps: int
    per_op: dict[str, dict[str, float]]
    comm_time_s_per_step: float | None
    overlap_fraction: float | None
    hidden_s_per_step: float | None = None  # collective time in flight while the main thread computed
    reason: str | None = None


# Where a trial's wall time goes, in order. The parent times `spawn` (launch until the
# rank's process exists) and `teardown` (the rank's result ready until the launch
# returns); each rank marks the others as it enters them (`PhaseTimes`).
PHASES = ("spawn", "import", "rendezvous", "build", "warmup", "window", "eval", "profile", "teardown")


@dataclass(kw_only=True, slots=True)
class PhaseTimes:
    """One rank's timeline on the machine's CLOCK_BOOTTIME (one clock shared by every process).

    `process_start_s` is when the kernel created the rank's process (None where it cannot be
    read); each mark is (phase, when the rank entered it), in order, and the last mark is
    ("done", when its result was ready). A phase lasts until the next mark.
    """

    process_start_s: float | None
    marks: list[tuple[str, float]]

    def durations(self) -> dict[str, float]:
        """Seconds in each phase the rank entered (a phase entered twice is summed)."""
        out: dict[str, float] = {}
        if self.process_start_s is not None and self.marks:
            out["import"] = self.marks[0][1] - self.process_start_s
        for (name, t0), (_, t1) in zip(self.marks, self.marks[1:], strict=False):
            out[name] = out.get(name, 0.0) + t1 - t0
        return out

    @property
    def done_s(self) -> float | None:
        return self.marks[-1][1] if self.marks and self.marks[-1][0] == "done" else None


@dataclass(kw_only=True, slots=True)
class Placement:
    """Where one rank's threads may run, read back from the kernel after its workload ran.

    `pinned_cores` are the compute thread's cores under the policy (None with `reason`
    when nothing was pinned); `thread_cores` maps every thread name of the process
    ("compute" for the rank's own thread) to the cores it may run on (None off Linux).
    """

    policy: str
    pinned_cores: list[int] | None
    thread_cores: dict[str, list[int]] | None
    reason: str | None = None


@dataclass(kw_only=True, slots=True)
class RankResult:
    """Everything one rank of a finished trial reports to the parent."""

    rank: int
    window: WindowResult
    tokens_per_step: int | None  # None: the workload processes no tokens (transfer, collectives)
    accuracy: Accuracy
    metrics: dict[str, Any]
    analytic_ops: dict[str, float] | None  # cost model, op -> message bytes per rank per step
    parallel: Parallel
    profile: Profile | None = None
    train_losses: list[float] | None = None
    generate: Generate | None = None
    # A step made of named parts timed separately (transfer: encode, broadcast, decode):
    # part -> its duration in each measured step, the same on every rank. The step's
    # latency is then their sum.
    step_parts_s: dict[str, list[float]] | None = None
    # The rank's own timeline of the trial (import, rendezvous, build, ...): set by the
    # worker around the workload, not by the workload.
    timeline: PhaseTimes | None = None
    placement: Placement | None = None  # set by the rank's entry point, not the workload

    def to_dict(self) -> dict[str, Any]:
        return {"status": "ok", **dataclasses.asdict(self)}


@dataclass(kw_only=True, slots=True, frozen=True)
class RankSkipped:
    """A rank that found, after launch, that the trial cannot run here."""

    rank: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"status": "skipped", **dataclasses.asdict(self)}


def _strict(cls: type, d: dict[str, Any]) -> Any:
    """`cls(**d)`, naming the missing and unknown keys: a contract broken across the process boundary."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise TypeError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}")
    return cls(**d)


def rank_output_from_dict(d: dict[str, Any]) -> RankResult | RankSkipped:
    """The parent's side of the boundary: a rank's dict back into its dataclass."""
    d = dict(d)
    status = d.pop("status")
    if status == "skipped":
        return _strict(RankSkipped, d)
    if status != "ok":
        raise TypeError(f"rank output with unknown status {status!r}")
    window = dict(d.pop("window"))
    window["memory"] = _strict(MemoryPeaks, window["memory"])
    if window.get("gpu_util") is not None:
        window["gpu_util"] = _strict(GpuUtil, window["gpu_util"])
    nested: dict[str, Any] = {
        "window": _strict(WindowResult, window),
        "accuracy": _strict(Accuracy, d.pop("accuracy")),
        "parallel": _strict(Parallel, d.pop("parallel")),
    }
    for key, cls in (("profile", Profile), ("generate", Generate), ("timeline", PhaseTimes), ("placement", Placement)):
        value = d.pop(key, None)
        nested[key] = None if value is None else _strict(cls, value)
    return _strict(RankResult, {**d, **nested})

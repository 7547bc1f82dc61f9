"""DDP's own knobs as sweepable strategies (bucket size)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.strategies import STRATEGIES
from bench.strategies.base import Phase, Strategy, TrialState


@dataclass(kw_only=True, slots=True, frozen=True)
class BucketParams:
    mb: float = 25.0  # DDP's default bucket_cap_mb

    def __post_init__(self) -> None:
        if self.mb <= 0:
            raise ValueError("mb must be > 0")


@STRATEGIES.register("bucket_cap_mb")
class BucketCap(Strategy):
    """DDP `bucket_cap_mb`: smaller buckets start all-reducing earlier in backward (more overlap),
    at the cost of more, smaller collectives. Same bytes, different calls and overlap."""

    name = "bucket_cap_mb"
    summary = "DDP bucket size in MB (default 25): trades collective count for overlap"
    phase = Phase.LAYOUT
    order = 0  # configures DDP before any layout strategy wraps the model
    Params = BucketParams
    workloads = frozenset({"train"})

    def apply(self, state: TrialState) -> None:
        state.ddp_options["bucket_cap_mb"] = self.params.mb

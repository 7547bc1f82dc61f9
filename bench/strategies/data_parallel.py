"""`data_parallel`: the seed's `nn.DataParallel`, one process driving every GPU, against DDP's process per GPU.

Each step DataParallel replicates the module from GPU 0 onto the others, scatters the
batch, runs the replicas in threads, gathers their outputs back on GPU 0 and, in
backward, sums every replica's gradients onto GPU 0. All of that is device-to-device
copies inside one process, not collectives, so the flight recorder sees none of it: the
row's logical bytes are null with that reason, never 0, and there is no cost model for
it (a partial one, gradients without the replication and the gathered logits, would be
a plausible wrong number). Compare it with DDP on latency and memory.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.contracts import Parallel, TrialConfig
from bench.strategies import STRATEGIES
from bench.strategies.base import Aspect, Strategy, TrialState
from bench.strategies.ddp import LAYOUT
from bench.strategies.metrics import Metric

INVISIBLE = (
    "nn.DataParallel moves tensors between GPUs with copies inside one process (replicate, scatter, gather, "
    "reduce_add), not collectives: the flight recorder sees none of them"
)


def visible_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@STRATEGIES.register("data_parallel")
class DataParallelLayout(Strategy):
    """`nn.DataParallel` over every visible GPU, in a single process (world_size 1)."""

    name = "data_parallel"
    summary = "the seed's `nn.DataParallel`: one process replicates the model onto every visible GPU each step and sums gradients on GPU 0; needs world_size 1 and >= 2 GPUs"
    aspect = Aspect.LAYOUT
    order = 10
    workloads = frozenset({"train"})
    exclusive = LAYOUT
    replaces_ddp = True
    metrics = (Metric("data_parallel_gpus", int, "GPUs", doc="GPUs nn.DataParallel replicates over"),)

    def skip_reason(self, cfg: TrialConfig) -> str | None:
        if cfg.world_size != 1:
            return (
                f"world_size must be 1, got {cfg.world_size}: nn.DataParallel is one process that drives every GPU "
                "(DDP is the layout with one process per GPU)"
            )
        if cfg.device != "cuda":
            return "nn.DataParallel splits each batch over CUDA devices: needs device=cuda and >= 2 GPUs in one process"
        gpus = visible_gpus()
        if gpus < 2:
            return f"nn.DataParallel needs >= 2 GPUs in one process, found {gpus}"
        return None

    def apply(self, state: TrialState) -> None:
        devices = list(range(visible_gpus()))
        state.wrapped, state.wrapper = nn.DataParallel(state.model, device_ids=devices), "data_parallel"
        state.comm_invisible = INVISIBLE
        state.parallel = Parallel(dp=len(devices))  # one rank, data parallel over its GPUs
        state.metrics["data_parallel_gpus"] = len(devices)

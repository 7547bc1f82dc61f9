"""Per-rank distributed environment: backend choice, process group, threads, device."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from bench.system import cpu_cores

# Flight-recorder ring size per process. Collective accounting reads this buffer, so it
# must hold every collective of a measured window (FSDP issues thousands per step on a big
# model). Set before the first process group exists: the recorder is a lazy singleton.
FLIGHT_RECORDER_ENTRIES = 200_000


@dataclass(frozen=True, slots=True)
class RankEnv:
    """Where this rank runs and how it talks to the others."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str  # "gloo" or "nccl"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def backend_for(device: str) -> str:
    """gloo on CPU, NCCL on CUDA: the backends each device is benchmarked with."""
    return "nccl" if device == "cuda" else "gloo"


def threads_for(world_size: int, requested: int | None) -> int:
    """Intra-op threads per rank: the machine's cores shared evenly, at least one.

    Oversubscribing (each of 4 ranks using all cores) makes every timing measure the
    OS scheduler instead of the strategy.
    """
    if requested:
        return requested
    return max(1, cpu_cores() // world_size)


CPUSET_ENV = "COMMBENCH_CPUSET"  # the cores a packed trial owns (bench.runner.packing)


def parse_cpuset(text: str) -> set[int]:
    """A `COMMBENCH_CPUSET` value ("4,5,6" or "4-6") as cores."""
    out: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def pin_cores(local_rank: int, local_world_size: int) -> list[int] | None:
    """Pin this rank to its own equal slice of the allowed cores, when every rank gets one.

    Unpinned, the scheduler moves ranks and their threads between cores. A gpt2-tiny train
    trial at 2 ranks on 2 cores ran at a median p50 of 118.0 ms pinned against 124.7 ms
    unpinned (6 alternating launches each, seeds 0-2 twice); five pinned launches of six
    fell within 115-120 ms, the sixth at 136 ms, so pinning does not remove the spread
    between launches. With more ranks than cores nothing is pinned: slices would be empty.
    `COMMBENCH_PIN_CORES=0` turns pinning off. Returns the cores pinned to, or None.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    per = len(cores) // local_world_size
    if per == 0:
        return None
    mine = cores[local_rank * per : (local_rank + 1) * per]
    os.sched_setaffinity(0, mine)
    return mine


def init_rank(device: str, threads: int | None, *, flight_recorder: bool = True) -> RankEnv:
    """Initialise the default process group from the launcher's env vars.

    `flight_recorder=False` sets the recorder's buffer to 0 (torch's default is 2000
    entries, i.e. on): the "untracked" side of the accounting-overhead benchmark.
    """
    os.environ["TORCH_FR_BUFFER_SIZE"] = str(FLIGHT_RECORDER_ENTRIES if flight_recorder else 0)
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    torch.set_num_threads(threads_for(world_size, threads))
    if os.environ.get(CPUSET_ENV) and hasattr(os, "sched_setaffinity"):
        # A packed trial: its ranks share only its cores, so pinning below slices those.
        os.sched_setaffinity(0, parse_cpuset(os.environ[CPUSET_ENV]))
    if device == "cpu" and os.environ.get("COMMBENCH_PIN_CORES", "1") != "0":
        pin_cores(local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", world_size)))
    backend = backend_for(device)
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        kwargs = {"device_id": dev} if device == "cuda" else {}
        dist.init_process_group(backend, rank=rank, world_size=world_size, **kwargs)
    return RankEnv(rank=rank, local_rank=local_rank, world_size=world_size, device=dev, backend=backend)


GATHERED = "gathered"  # status of a rank's return value that carries every rank's dict (or None)


def gather_to_rank0(out: dict[str, Any], rank: int, world_size: int) -> dict[str, Any]:
    """Send this rank's dict to global rank 0: rank 0 returns all of them, in rank order."""
    got: list[Any] | None = [None] * world_size if rank == 0 else None
    dist.gather_object(out, got, dst=0)
    return {"status": GATHERED, "ranks": got}


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()

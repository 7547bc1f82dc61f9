"""Per-rank distributed environment: backend choice, process group, threads, device."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from bench.contracts import PIN_POLICIES, Placement
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
    pin: str = "none"  # the placement policy applied (`TrialConfig.pin`); a hand-built env pins nothing
    pinned_cores: list[int] | None = None  # the compute thread's cores; None: not pinned

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


def confine(cores: set[int]) -> None:
    """Restrict every thread of this process to `cores`: the calling one, the threads it
    starts later, and those already running (a forked rank inherits jemalloc's background
    thread, which would otherwise keep the whole machine)."""
    os.sched_setaffinity(0, cores)
    tasks = Path("/proc/self/task")
    for task in tasks.iterdir() if tasks.is_dir() else ():
        try:
            os.sched_setaffinity(int(task.name), cores)
        except OSError:
            continue  # the thread exited meanwhile


def pin_cores(local_rank: int, local_world_size: int) -> list[int] | None:
    """Pin the calling thread to this rank's own equal slice of the allowed cores, when every rank gets one.

    `sched_setaffinity(0, ...)` sets the calling thread's mask only; threads it creates
    later inherit it, threads that already exist keep theirs. With more ranks than cores
    nothing is pinned: slices would be empty. Returns the cores pinned to, or None.
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


def thread_cores() -> dict[str, list[int]] | None:
    """The cores each thread of this process may run on, by thread name; the calling thread is "compute".

    Threads of one name (gloo's two `pt_gloo_runloop` workers, torch's intra-op workers,
    which carry the process's name) are merged: the union of their masks. None where
    /proc/self/task cannot be read (not Linux).
    """
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return None
    me = threading.get_native_id()
    out: dict[str, set[int]] = {}
    for task in tasks.iterdir():
        try:
            name = "compute" if int(task.name) == me else (task / "comm").read_text().strip()
            cores = _core_list((task / "status").read_text().split("Cpus_allowed_list:")[1].split()[0])
        except (OSError, IndexError):
            continue  # the thread exited while being read
        out.setdefault(name, set()).update(cores)
    return {name: sorted(cores) for name, cores in sorted(out.items())}


def _core_list(text: str) -> list[int]:
    """`0-2,5` -> [0, 1, 2, 5] (the kernel's list format)."""
    cores: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cores.extend(range(int(lo), int(hi or lo) + 1))
    return cores


def init_rank(device: str, threads: int | None, *, flight_recorder: bool = True, pin: str = "compute") -> RankEnv:
    """Initialise the default process group from the launcher's env vars, placing threads by `pin`.

    CPU ranks only (a CUDA rank's host threads are left alone):
    - "compute": pin this (the compute) thread to the rank's slice of the cores *after*
      `init_process_group`, whose backend threads (gloo's `gloo_tcp_loop` and two
      `pt_gloo_runloop` workers, all created inside it) keep the full mask;
    - "all": pin *before* it, so the backend threads inherit the one slice and compete
      with the compute thread for it (the suite's placement before measurement 3);
    - "none": pin nothing.
    The intra-op thread count is set last: torch starts its OpenMP workers there, and they
    inherit the compute thread's mask. `flight_recorder=False` sets the recorder's buffer to
    0 (torch's default is 2000 entries, i.e. on): the "untracked" side of the
    accounting-overhead benchmark.
    """
    if pin not in PIN_POLICIES:
        raise ValueError(f"pin must be one of {', '.join(PIN_POLICIES)}, got {pin!r}")
    os.environ["TORCH_FR_BUFFER_SIZE"] = str(FLIGHT_RECORDER_ENTRIES if flight_recorder else 0)
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if os.environ.get(CPUSET_ENV) and hasattr(os, "sched_setaffinity"):
        # A packed trial: its ranks (and their backend threads) share only its cores, so
        # the pinning below slices those.
        confine(parse_cpuset(os.environ[CPUSET_ENV]))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    pinned = None
    if device == "cpu" and pin == "all":
        pinned = pin_cores(local_rank, local_world)
    backend = backend_for(device)
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        kwargs = {"device_id": dev} if device == "cuda" else {}
        dist.init_process_group(backend, rank=rank, world_size=world_size, **kwargs)
    if device == "cpu" and pin == "compute":
        pinned = pin_cores(local_rank, local_world)
    torch.set_num_threads(threads_for(world_size, threads))
    return RankEnv(
        rank=rank, local_rank=local_rank, world_size=world_size, device=dev, backend=backend, pin=pin, pinned_cores=pinned
    )


def placement(env: RankEnv) -> Placement:
    """What `env.pin` did to this rank, read back from the kernel: call it from the compute thread."""
    reason = None
    if env.pinned_cores is None:
        if env.pin == "none":
            reason = "pin=none: no thread pinned"
        elif env.device.type != "cpu":
            reason = "pinning applies to CPU ranks only"
        else:
            reason = "more local ranks than cores (or no sched_setaffinity): no thread pinned"
    return Placement(policy=env.pin, pinned_cores=env.pinned_cores, thread_cores=thread_cores(), reason=reason)


GATHERED = "gathered"  # status of a rank's return value that carries every rank's dict (or None)


def gather_to_rank0(out: dict[str, Any], rank: int, world_size: int) -> dict[str, Any]:
    """Send this rank's dict to global rank 0: rank 0 returns all of them, in rank order."""
    got: list[Any] | None = [None] * world_size if rank == 0 else None
    dist.gather_object(out, got, dst=0)
    return {"status": GATHERED, "ranks": got}


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()

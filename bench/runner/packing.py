"""Which trials of a sweep may run side by side, on which cores and GPUs: a pure planner.

A trial wants `world_size x threads_per_rank` cores (threads default to the machine's
cores shared by its ranks, i.e. all of them) and, on CUDA, `world_size` GPUs. Trials
are taken in suite order and grouped into waves: a trial joins the current wave when
the cores (and GPUs) still free hold it, else it starts the next wave. One core is kept
back for the launchers and the OS whenever two trials would share the machine, so a
2-core machine never packs: a trial fits only in the one core left, and a trial that
does not fit runs alone on every core, as it would unpacked. Trials in a wave get
disjoint, contiguous core sets and disjoint GPUs, and each row records the trial_ids of
the others in its wave (`packed_with`).

Packing changes what a trial competes with (memory bandwidth, caches), so its timings
are only comparable with other packed rows; it is off unless asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

RESERVED_CORES = 1  # for the launching processes and the OS, once trials share the machine


@dataclass(frozen=True, slots=True)
class Demand:
    """What one trial needs: its id, its cores (ranks x threads) and its GPUs (CUDA ranks)."""

    trial_id: str
    cores: int
    gpus: int = 0

    def __post_init__(self) -> None:
        if self.cores < 1 or self.gpus < 0:
            raise ValueError(f"trial {self.trial_id}: cores must be >= 1 and gpus >= 0")


@dataclass(frozen=True, slots=True)
class Slot:
    """Where one trial runs: the cores its ranks are pinned to and the GPUs they see."""

    trial_id: str
    cores: tuple[int, ...]
    gpus: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Wave:
    """Trials that run at the same time, on disjoint resources."""

    slots: tuple[Slot, ...]

    def beside(self, trial_id: str) -> list[str]:
        """The other trials of the wave (a row's `packed_with`)."""
        return [s.trial_id for s in self.slots if s.trial_id != trial_id]


def plan(demands: list[Demand], cores: list[int], gpus: list[int] | None = None, *, reserve: int = RESERVED_CORES) -> list[Wave]:
    """Waves of trials in suite order; every trial appears in exactly one wave.

    `reserve`: cores kept back for the launchers once trials share the machine (tests set 0
    to pack on a 2-core machine)."""
    gpus = gpus or []
    usable = cores[: max(1, len(cores) - reserve)]
    waves: list[Wave] = []
    current: list[Slot] = []
    free_cores, free_gpus = list(usable), list(gpus)
    for d in demands:
        if d.gpus > len(gpus):
            raise ValueError(f"trial {d.trial_id} needs {d.gpus} GPUs, the machine has {len(gpus)}")
        if d.cores <= len(free_cores) and d.gpus <= len(free_gpus):
            current.append(Slot(d.trial_id, tuple(free_cores[: d.cores]), tuple(free_gpus[: d.gpus])))
            free_cores, free_gpus = free_cores[d.cores :], free_gpus[d.gpus :]
            continue
        if current:
            waves.append(Wave(tuple(current)))
        if d.cores <= len(usable) and d.gpus <= len(gpus):
            current = [Slot(d.trial_id, tuple(usable[: d.cores]), tuple(gpus[: d.gpus]))]
            free_cores, free_gpus = usable[d.cores :], gpus[d.gpus :]
        else:  # bigger than the packable machine: alone, on all of it
            waves.append(Wave((Slot(d.trial_id, tuple(cores), tuple(gpus[: d.gpus])),)))
            current, free_cores, free_gpus = [], list(usable), list(gpus)
    if current:
        waves.append(Wave(tuple(current)))
    return waves


def cpuset(cores: tuple[int, ...]) -> str:
    """Cores as the `COMMBENCH_CPUSET` value a launch passes to its ranks, e.g. "4,5,6"
    (`bench.distributed.env.init_rank` pins the rank's slice within them)."""
    return ",".join(str(c) for c in cores)

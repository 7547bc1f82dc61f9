"""Where a trial's wall time went: the launcher's timestamps and rank 0's timeline, as `phase_*_s` columns.

`spawn` runs from the launch call (torchelastic's agent, its rendezvous store, the fork
or exec of the rank) until the kernel created rank 0's process; `import` until rank 0's
worker had imported what it needs (torch, transformers, the project, plugins);
`rendezvous` is `init_process_group`; `build` the model, its strategies and the data;
`warmup` and `window` the untimed and measured steps; `eval` everything after the window
but the profiler pass (evaluation, infer's reference outputs and generate pass);
`profile` the profiler pass; `teardown` from rank 0's result being ready until the
launch returned (process-group teardown, process exit, the agent collecting results).
Every phase is on one clock and they follow each other, so they add up to `trial_wall_s`.

A failed trial's rank 0 returns nothing, but its marks are journaled as it enters each
phase (`bench.meters.phases`): its row gets the phases up to the failure, the phase it
was in runs until the launch returned (the failure, its detection and the kill), and
`failed_phase` names the phase the failing rank was in.
"""

from __future__ import annotations

import json
from typing import Any

from bench.contracts import PHASES, PhaseTimes
from bench.distributed.launch import LaunchResult
from bench.storage.schema import PHASE_COLUMNS
from bench.storage.schema import phase_column as column


def phase_columns(result: LaunchResult, timeline: PhaseTimes | None, reasons: dict[str, str]) -> dict[str, Any]:
    """Seconds per phase of rank 0's trial; a phase the rank never entered is null with why.

    A timeline without its "done" mark is a failed trial's: its last phase lasts until the
    launch returned, and the phases after it are null because the trial never got there.
    """
    if timeline is None or not timeline.marks:
        for col in PHASE_COLUMNS:
            reasons[col] = "rank 0 left no timeline"
        return {}
    spent = timeline.durations()
    if timeline.process_start_s is not None:
        spent["spawn"] = timeline.process_start_s - result.started_s
    failed_in = None if timeline.done_s is not None else timeline.marks[-1][0]
    if failed_in is None:
        spent["teardown"] = result.ended_s - timeline.marks[-1][1]
    else:
        spent[failed_in] = spent.get(failed_in, 0.0) + result.ended_s - timeline.marks[-1][1]
    out: dict[str, Any] = {}
    for phase in PHASES:
        if phase in spent:
            out[column(phase)] = spent[phase]
        elif phase in ("spawn", "import"):
            reasons[column(phase)] = "the rank's process start time is unreadable here (no /proc)"
        elif failed_in is not None:
            reasons[column(phase)] = f"the trial failed in {failed_in}, before its {phase} phase"
        else:
            reasons[column(phase)] = f"no {phase} phase in this trial (workload or suite settings)"
    return out


def failure_columns(result: LaunchResult) -> dict[str, Any]:
    """A failed launch's phase columns (rank 0's journaled timeline), `failed_phase` (the phase
    the failing rank, or rank 0 when no single rank failed, was in) and their null reasons."""
    reasons: dict[str, str] = {}
    row = phase_columns(result, result.timelines.get(0), reasons)
    rank = result.failed_rank if result.failed_rank is not None else 0
    timeline = result.timelines.get(rank)
    if timeline is not None and timeline.marks:
        row["failed_phase"] = timeline.marks[-1][0]
    else:
        reasons["failed_phase"] = f"rank {rank} left no timeline (it failed before its first mark, or off this node)"
    return {**row, "null_reasons": json.dumps(reasons)}

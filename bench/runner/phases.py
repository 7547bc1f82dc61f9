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
"""

from __future__ import annotations

from typing import Any

from bench.contracts import PHASES, PhaseTimes
from bench.distributed.launch import LaunchResult
from bench.storage.schema import PHASE_COLUMNS
from bench.storage.schema import phase_column as column


def phase_columns(result: LaunchResult, timeline: PhaseTimes | None, reasons: dict[str, str]) -> dict[str, Any]:
    """Seconds per phase of rank 0's trial; a phase the rank never entered is null with why."""
    if timeline is None or timeline.done_s is None:
        for col in PHASE_COLUMNS:
            reasons[col] = "rank 0 returned no timeline"
        return {}
    spent = timeline.durations()
    if timeline.process_start_s is not None:
        spent["spawn"] = timeline.process_start_s - result.started_s
    spent["teardown"] = result.ended_s - timeline.done_s
    out: dict[str, Any] = {}
    for phase in PHASES:
        if phase in spent:
            out[column(phase)] = spent[phase]
        elif phase in ("spawn", "import"):
            reasons[column(phase)] = "the rank's process start time is unreadable here (no /proc)"
        else:
            reasons[column(phase)] = f"no {phase} phase in this trial (workload or suite settings)"
    return out

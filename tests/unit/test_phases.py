"""Phase timings: a rank's timeline and the launcher's timestamps become phase columns that add up to the wall time."""

from __future__ import annotations

import pytest

from bench.contracts import PHASES, PhaseTimes, rank_output_from_dict
from bench.distributed.launch import LaunchResult
from bench.runner.phases import phase_columns
from bench.storage.schema import PHASE_COLUMNS, TRIAL_SCHEMA
from bench.trackers import phases
from tests.unit.test_memory_and_rows import _result


def _timeline(*marks: tuple[str, float], start: float | None = 10.5) -> PhaseTimes:
    return PhaseTimes(process_start_s=start, marks=list(marks))


def test_durations_run_from_mark_to_mark_and_sum_a_phase_entered_twice() -> None:
    t = _timeline(("rendezvous", 12.0), ("build", 12.5), ("eval", 13.0), ("build", 14.0), ("done", 14.25))
    assert t.durations() == {"import": 1.5, "rendezvous": 0.5, "build": 0.75, "eval": 1.0}
    assert t.done_s == 14.25
    assert _timeline(("build", 1.0)).done_s is None  # a rank that never finished


def test_phase_columns_add_up_to_the_launch_wall_time() -> None:
    t = _timeline(("rendezvous", 12.0), ("build", 12.5), ("warmup", 13.0), ("window", 14.0), ("eval", 17.0),
                  ("profile", 17.5), ("done", 18.0))  # fmt: skip
    result = LaunchResult(started_s=10.0, ended_s=19.0, wall_s=9.0)
    reasons: dict[str, str] = {}
    cols = phase_columns(result, t, reasons)
    assert cols == {"phase_spawn_s": 0.5, "phase_import_s": 1.5, "phase_rendezvous_s": 0.5, "phase_build_s": 0.5,
                    "phase_warmup_s": 1.0, "phase_window_s": 3.0, "phase_eval_s": 0.5, "phase_profile_s": 0.5,
                    "phase_teardown_s": 1.0}  # fmt: skip
    assert sum(cols.values()) == pytest.approx(result.wall_s) and reasons == {}


def test_a_phase_not_entered_is_null_with_a_reason() -> None:
    t = _timeline(("rendezvous", 12.0), ("build", 12.5), ("done", 13.0), start=None)
    reasons: dict[str, str] = {}
    cols = phase_columns(LaunchResult(started_s=10.0, ended_s=14.0), t, reasons)
    assert set(cols) == {"phase_rendezvous_s", "phase_build_s", "phase_teardown_s"}
    assert "/proc" in reasons["phase_spawn_s"] and "no profile phase" in reasons["phase_profile_s"]
    reasons = {}
    assert phase_columns(LaunchResult(), None, reasons) == {} and set(reasons) == set(PHASE_COLUMNS)


def test_every_phase_has_a_column_and_the_timeline_crosses_the_process_boundary() -> None:
    assert [f"phase_{p}_s" for p in PHASES] == list(PHASE_COLUMNS)
    assert set(PHASE_COLUMNS) <= set(TRIAL_SCHEMA.names)
    phases.reset()
    phases.mark("rendezvous")
    t = phases.timeline(phases.process_start())
    assert [m[0] for m in t.marks] == ["rendezvous", "done"] and t.durations()["rendezvous"] >= 0
    start = phases.process_start()
    assert start is None or 0 < start <= t.marks[0][1]  # the process began before it marked anything, on one clock
    r = _result(0)
    r.timeline = t
    assert rank_output_from_dict(r.to_dict()).timeline == t  # type: ignore[union-attr]

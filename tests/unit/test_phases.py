"""Phase timings: a rank's timeline and the launcher's timestamps become phase columns that add up to the wall time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.contracts import PHASES, PhaseTimes, rank_output_from_dict
from bench.distributed.launch import LaunchResult
from bench.meters import phases
from bench.runner.phases import failure_columns, phase_columns
from bench.storage.schema import PHASE_COLUMNS, TRIAL_SCHEMA
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
    assert reasons["phase_build_s"] == "rank 0 left no timeline"


def test_a_failed_trials_phases_run_to_the_failure_and_its_phase_runs_until_the_launch_returned() -> None:
    result = LaunchResult(started_s=10.0, ended_s=20.0, wall_s=10.0, error="boom", failed_rank=1)
    result.timelines = {0: _timeline(("rendezvous", 12.0), ("build", 12.5), ("warmup", 13.0)),
                        1: _timeline(("rendezvous", 12.0), ("build", 12.25))}  # fmt: skip
    cols = failure_columns(result)
    reasons = json.loads(cols.pop("null_reasons"))
    assert cols.pop("failed_phase") == "build"  # the failed rank's phase, not rank 0's
    assert cols == {"phase_spawn_s": 0.5, "phase_import_s": 1.5, "phase_rendezvous_s": 0.5, "phase_build_s": 0.5,
                    "phase_warmup_s": 7.0}  # fmt: skip
    assert sum(cols.values()) == pytest.approx(result.wall_s)
    assert reasons["phase_window_s"] == "the trial failed in warmup, before its window phase"
    assert reasons["phase_teardown_s"] == "the trial failed in warmup, before its teardown phase"
    result.failed_rank, result.timelines = None, {}  # a timeout; nothing journaled (no /proc, or died at once)
    reasons = json.loads(failure_columns(result)["null_reasons"])
    assert "rank 0 left no timeline" in reasons["failed_phase"] and set(PHASE_COLUMNS) < set(reasons)


def test_the_journal_holds_every_mark_as_it_is_made_and_ends_at_a_cut_line(tmp_path: Path, monkeypatch) -> None:
    journal = tmp_path / "0"
    monkeypatch.setenv(phases.JOURNAL_ENV, str(journal))
    phases.reset(12.5)
    phases.mark("rendezvous")
    phases.mark("build")
    got = phases.read_journal(journal)
    assert got is not None and got.process_start_s == 12.5 and [m[0] for m in got.marks] == ["rendezvous", "build"]
    assert got.marks == phases._marks  # the same times, to the last bit (repr round-trips a float)
    with journal.open("a") as f:
        f.write("eval\t13")  # the rank died while writing: no newline, but the value parses
        f.write("x")  # ... or does not: "13x"
    assert [m[0] for m in phases.read_journal(journal).marks] == ["rendezvous", "build"]  # type: ignore[union-attr]
    assert phases.read_journal(tmp_path / "missing") is None
    phases.reset(None)  # a new trial's rank truncates it
    assert phases.read_journal(journal) == PhaseTimes(process_start_s=None, marks=[])


def test_every_phase_has_a_column_and_the_timeline_crosses_the_process_boundary() -> None:
    assert [f"phase_{p}_s" for p in PHASES] == list(PHASE_COLUMNS)
    assert set(PHASE_COLUMNS) <= set(TRIAL_SCHEMA.names)
    phases.reset(phases.process_start())
    phases.mark("rendezvous")
    t = phases.timeline()
    assert [m[0] for m in t.marks] == ["rendezvous", "done"] and t.durations()["rendezvous"] >= 0
    start = phases.process_start()
    assert start is None or 0 < start <= t.marks[0][1]  # the process began before it marked anything, on one clock
    r = _result(0)
    r.timeline = t
    assert rank_output_from_dict(r.to_dict()).timeline == t  # type: ignore[union-attr]

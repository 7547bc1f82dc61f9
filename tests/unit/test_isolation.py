"""Failure classes, the stack-dump excerpt of a hung rank, and a results write cut short."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.distributed.isolation import classify, last_stack_dump, stack_dumps, stderr_tail
from bench.storage import parquet
from bench.system import now_utc


@pytest.mark.parametrize(
    ("exitcode", "traceback", "error", "stderr", "expected"),
    [
        (1, True, "Traceback\nRuntimeError: boom", None, "exception"),
        (1, True, "Traceback\nMemoryError", None, "oom"),
        (1, True, "RuntimeError: DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes", None, "oom"),
        (
            -6,
            False,
            "Signal 6 (SIGABRT) received by PID 7",
            "terminate called after throwing an instance of 'std::bad_alloc'",
            "oom",
        ),
        (-11, False, "Signal 11 (SIGSEGV) received by PID 7", "Fatal Python error: Segmentation fault", "signal"),
        (3, False, "exited with code 3 and no Python traceback", None, "exit"),
        (1, True, "RuntimeError: [pair.cc:598] Timed out waiting 1800000ms for recv operation to complete", None, "timeout"),
        (None, True, "Traceback\nValueError: x", None, "exception"),  # found through a sibling's error file
    ],
)
def test_classify(exitcode: int | None, traceback: bool, error: str, stderr: str | None, expected: str) -> None:
    assert classify(exitcode, traceback, error, stderr) == expected


DUMP = """some warning
rank says: waiting
Thread 0x00007f0000000001 (most recent call first):
  File "/lib/threading.py", line 331 in wait
  File "/lib/threading.py", line 629 in wait

Current thread 0x00007f0000000002 (most recent call first):
{frames}

Extension modules: numpy, torch (total: 2)
"""


def _frames(n: int) -> str:
    return "\n".join(f'  File "/x/f{i}.py", line {i} in f{i}' for i in range(n))


def test_a_stack_dump_keeps_each_threads_innermost_frames() -> None:
    text = "old stuff\n" + DUMP.format(frames=_frames(30))
    dump = last_stack_dump(text, frames=5, before=2)
    lines = dump.splitlines()
    assert lines[:2] == ["some warning", "rank says: waiting"]
    assert lines[2].startswith("Thread 0x00007f0000000001") and "line 331 in wait" in lines[3]
    current = lines.index("Current thread 0x00007f0000000002 (most recent call first):")
    assert lines[current + 1 : current + 7] == [f'  File "/x/f{i}.py", line {i} in f{i}' for i in range(5)] + ["  ..."]
    assert "Extension modules" not in dump and "f29.py" not in dump
    assert last_stack_dump("no dump here\n") is None


def test_tails_come_from_each_ranks_stderr_log(tmp_path: Path) -> None:
    for rank, text in ((0, DUMP.format(frames=_frames(3))), (1, "just an error\n")):
        log = tmp_path / "run_x" / "attempt_0" / str(rank) / "stderr.log"
        log.parent.mkdir(parents=True)
        log.write_text(text)
    assert stderr_tail(tmp_path, 1) == "just an error"
    assert stderr_tail(tmp_path, 2) is None
    both = stack_dumps(tmp_path, 2)
    assert both.startswith("--- rank 0 ---\n") and "f2.py" in both
    assert both.endswith("--- rank 1 ---\njust an error")  # no dump there: its plain tail


def test_a_write_cut_short_leaves_the_last_good_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    row = {"schema_version": 3, "run_id": "r", "trial_id": "a", "suite": "s", "strategy": "baseline", "status": "ok",
           "started_at": now_utc(), "config": json.dumps({})}  # fmt: skip
    writer = parquet.RunWriter(tmp_path, "r")
    writer.add(row, [])

    def dies_half_way(table: object, where: str) -> None:
        Path(where).write_bytes(b"PAR1 half a file")
        raise KeyboardInterrupt  # what a kill mid-write looks like from here

    monkeypatch.setattr(parquet.pq, "write_table", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        writer.add({**row, "trial_id": "b"}, [])
    monkeypatch.undo()
    assert list(parquet.read_results([tmp_path])["trial_id"]) == ["a"]
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))

"""Which rank's error a failed trial reports: the cause, not a peer's 'connection closed'."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from bench.distributed.launch import _root_cause

PEER = "RuntimeError: [pair.cc:553] Connection closed by peer [127.0.0.1]:25515. This is typically caused by a remote worker crashing."


def _error_file(attempt: Path, rank: int, text: str) -> str:
    path = attempt / str(rank) / "error.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"message": {"message": text, "extraInfo": {"py_callstack": f"Traceback\n{text}"}}}))
    return str(path)


def _failure(error_file: str, text: str, timestamp: int) -> SimpleNamespace:
    return SimpleNamespace(message={"message": text, "extraInfo": {"py_callstack": f"Traceback\n{text}"}},
                           timestamp=timestamp, error_file=error_file, exitcode=1)  # fmt: skip


def test_the_primary_failure_wins_over_an_earlier_peer_error(tmp_path: Path) -> None:
    f0 = _failure(_error_file(tmp_path, 0, PEER), PEER, 1)
    f1 = _failure(_error_file(tmp_path, 1, "RuntimeError: boom"), "RuntimeError: boom", 2)
    assert _root_cause(SimpleNamespace(failures={0: f0, 1: f1}))[:2] == (1, "Traceback\nRuntimeError: boom")


def test_an_uncollected_ranks_error_file_is_the_cause(tmp_path: Path) -> None:
    # The agent stopped the group after rank 0's peer error; rank 1 had already written its file.
    f0 = _failure(_error_file(tmp_path, 0, PEER), PEER, 1)
    _error_file(tmp_path, 1, "RuntimeError: boom")
    assert _root_cause(SimpleNamespace(failures={0: f0}))[:2] == (1, "Traceback\nRuntimeError: boom")


def test_only_peer_errors_report_the_first(tmp_path: Path) -> None:
    f0 = _failure(_error_file(tmp_path, 0, PEER), PEER, 1)
    assert _root_cause(SimpleNamespace(failures={0: f0}))[0] == 0

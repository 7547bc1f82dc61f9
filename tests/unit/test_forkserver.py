"""The fork server's key: what a forked rank inherits from the server must match the launching process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.distributed import forkserver, isolation
from bench.meters import phases


def test_the_key_follows_environment_cwd_and_path_but_not_pytest_or_torchelastic_bookkeeping(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key = forkserver._fingerprint()
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "elsewhere (call)")
    monkeypatch.setenv("TORCHELASTIC_SIGNALS_TO_HANDLE", "SIGTERM")
    assert forkserver._fingerprint() == key
    monkeypatch.setenv("COMMBENCH_CACHE", str(tmp_path))  # a rank would read a stale value
    assert forkserver._fingerprint() != key
    monkeypatch.delenv("COMMBENCH_CACHE")
    monkeypatch.chdir(tmp_path)  # relative paths in a trial resolve against the cwd
    assert forkserver._fingerprint() != key


def test_a_launch_env_is_set_in_the_rank_without_restarting_the_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The rank's wrapper sets the launch's env itself: a forked rank has the server's env.
    monkeypatch.setattr(isolation, "_set_parent_death_signal", lambda pid: None)
    monkeypatch.setattr(isolation.os, "setpgid", lambda pid, pgid: None)
    monkeypatch.setattr(isolation.faulthandler, "register", lambda *a, **k: None)
    key = forkserver._fingerprint()

    def entry(x: int) -> tuple[int, str | None]:
        return x + 1, os.environ.get("COMMBENCH_TEST_LAUNCH_ENV")

    wrapped = isolation.RankEntry(entry, tmp_path, {"COMMBENCH_TEST_LAUNCH_ENV": "on"})
    assert wrapped.__name__ == "entry"  # torchelastic names the workers after it
    monkeypatch.delenv("COMMBENCH_TEST_LAUNCH_ENV", raising=False)
    try:
        assert wrapped(1) == (2, "on")
    finally:
        os.environ.pop("COMMBENCH_TEST_LAUNCH_ENV", None)
        os.environ.pop(phases.JOURNAL_ENV, None)  # the wrapper points a rank's journal into its log dir
    assert (tmp_path / "timeline" / "0").parent.is_dir()
    assert forkserver._fingerprint() == key  # nothing of the launch's env reaches the server's key


def test_the_isolation_oracle_sees_a_patch_left_in_its_process(monkeypatch: pytest.MonkeyPatch) -> None:
    # What tests/integration/test_launch_paths.py relies on: were two trials to share a
    # process, the second would record the first's patch.
    from types import SimpleNamespace

    import torch
    import torch.nn.functional as F

    from bench.strategies.base import NoParams
    from tests.plugins.patch_torch import MARK, PatchTorch

    monkeypatch.setattr(F, "gelu", F.gelu)  # restored after the test, as is torch below
    monkeypatch.setattr(torch, MARK, None, raising=False)
    first, second = (SimpleNamespace(cfg=SimpleNamespace(trial_id=t), metrics={}) for t in ("t1", "t2"))
    PatchTorch(NoParams()).apply(first)  # type: ignore[arg-type]
    PatchTorch(NoParams()).apply(second)  # type: ignore[arg-type]
    assert (first.metrics["torch_patched_before"], first.metrics["gelu_patched_before"]) == (None, None)
    assert (second.metrics["torch_patched_before"], second.metrics["gelu_patched_before"]) == ("t1", "t1")


def test_cuda_trials_are_spawned_whatever_the_default() -> None:
    """A forked rank of a server that touched CUDA cannot start CUDA (seen on an H200)."""
    assert forkserver.method_for("cuda", "forkserver") == "spawn"
    assert forkserver.method_for("cpu", "forkserver") == "forkserver"
    assert forkserver.method_for("cpu", "spawn") == "spawn"

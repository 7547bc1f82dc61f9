"""Thread placement in a real 2-rank trial: the compute thread pinned, gloo's threads free, the row says so."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from bench.contracts import TrialConfig
from bench.runner.suite import NO_MODEL
from bench.runner.trial import run_trial

pytestmark = pytest.mark.multirank

GLOO_THREADS = ("gloo_tcp_loop", "pt_gloo_runloop")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="thread masks are read from /proc (Linux)")
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="2 ranks pin only with at least 2 cores")
def test_compute_policy_pins_the_compute_thread_and_its_workers_but_not_gloo(tmp_path: Path) -> None:
    cores = sorted(os.sched_getaffinity(0))
    # Two intra-op threads per rank, so torch starts a worker that must inherit the pin.
    cfg = TrialConfig(suite="t", strategy="baseline", model=NO_MODEL, workload="collectives", world_size=2, steps=2,
                      warmup_steps=1, profile_steps=0, threads_per_rank=2, pin="compute")  # fmt: skip
    row, _ = run_trial(cfg, "placement", [], tmp_path)
    assert row["status"] == "ok", row.get("error")
    assert row["pin_policy"] == "compute"
    per = len(cores) // 2
    slices = [cores[:per], cores[per : 2 * per]]
    assert json.loads(row["pinned_cores"]) == slices
    intra_op = Path(sys.executable).name[:15]  # torch's OpenMP workers carry the process's name
    for rank, threads in enumerate(json.loads(row["thread_cores"])):
        assert threads["compute"] == slices[rank]
        assert threads[intra_op] == slices[rank]
        for name in GLOO_THREADS:  # created inside init_process_group, before the pin: the full set
            assert threads[name] == cores, (rank, name, threads)

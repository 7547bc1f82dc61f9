"""Peak memory that means the window, and row columns that say how they were measured or why they are null."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
import torch

from bench.contracts import Accuracy, MemoryPeaks, Parallel, RankResult, TrialConfig, WindowResult
from bench.meters import memory
from bench.meters.memory import MemoryTracker
from bench.runner.rows import aggregate

MB = 1 << 20
CPU = torch.device("cpu")


def _hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture
def exact() -> None:
    tracker = MemoryTracker(CPU)
    tracker.start()
    if tracker.stop().rss_peak_method != "kernel-VmHWM":
        pytest.skip("this kernel does not let a process reset its VmHWM (/proc/self/clear_refs)")


def _touch(nbytes: int) -> torch.Tensor:
    return torch.ones(nbytes // 4)  # filled, so every page is resident


def test_the_peak_is_the_windows_not_the_processs(exact: None) -> None:
    spike = _touch(300 * MB)
    del spike  # a peak before the window
    lifetime = _hwm()
    tracker = MemoryTracker(CPU)
    tracker.start()
    quiet = tracker.stop()
    assert quiet.rss_peak is not None and quiet.rss_peak < lifetime - 250 * MB  # the reset forgot the earlier spike
    tracker.start()
    inside = _touch(200 * MB)
    loud = tracker.stop()
    del inside
    assert loud.rss_peak is not None and loud.rss_peak >= quiet.rss_end + 190 * MB  # a spike inside is seen, in bytes


def test_the_window_starts_from_live_memory(exact: None) -> None:
    """Garbage (a cycle holding a big tensor) left before the window is collected, not billed to it."""

    class Node:
        def __init__(self) -> None:
            self.me = self
            self.data = _touch(200 * MB)

    before = psutil.Process().memory_info().rss
    Node()  # unreachable, but resident until the cycle collector runs
    assert psutil.Process().memory_info().rss > before + 190 * MB
    tracker = MemoryTracker(CPU)
    tracker.start()
    peaks = tracker.stop()
    assert peaks.rss_peak is not None and peaks.rss_peak < before + 100 * MB


def _result(rank: int, method: str = "kernel-VmHWM", tokens: int | None = 64, phases: dict | None = None) -> RankResult:
    mem = MemoryPeaks(
        rss_end=1, rss_peak=100 + rank, rss_peak_method=method, cuda_max_allocated=None, cuda_max_reserved=None,
        nvml_process_used=None, nvml_device_used=None,
    )  # fmt: skip
    window = WindowResult(step_times_s=[0.1, 0.3, 0.2], memory=mem, comm_records=[], comm_summary=None, wire=None)
    return RankResult(
        rank=rank, window=window, tokens_per_step=tokens, accuracy=Accuracy(), metrics={}, analytic_ops=None,
        parallel=Parallel(dp=2), step_parts_s=phases,
    )  # fmt: skip


CFG = TrialConfig(suite="t", strategy="baseline", model="gpt2-tiny", workload="transfer", world_size=2, steps=3)


def test_a_sampled_rss_peak_says_so() -> None:
    row = aggregate(CFG, [_result(0), _result(1, method="psutil-sampled-5ms")])
    assert row["mem_rss_peak_method"] == "kernel-VmHWM,psutil-sampled-5ms"
    assert row["mem_rss_peak_bytes_max"] == 101 and row["mem_rss_peak_bytes_sum"] == 201
    assert "not exact on rank(s) [1]" in row["null_reasons"]
    exact_row = aggregate(CFG, [_result(0), _result(1)])
    assert exact_row["mem_rss_peak_method"] == "kernel-VmHWM" and "mem_rss_peak_bytes_max" not in exact_row["null_reasons"]


def test_no_tokens_means_null_throughput_with_a_reason() -> None:
    row = aggregate(CFG, [_result(0, tokens=None), _result(1, tokens=None)])
    assert row["tokens_per_s"] is None and row["tokens_per_step"] is None
    assert '"tokens_per_s": "the transfer workload processes no tokens"' in row["null_reasons"]
    assert aggregate(CFG, [_result(0), _result(1)])["tokens_per_s"] == pytest.approx(2 * 64 / 0.2)  # median step 0.2 s


def test_a_step_of_phases_is_their_sum() -> None:
    phases = {"encode": [0.5, 0.1, 0.2], "broadcast": [0.01, 0.02, 0.03], "decode": [0.1, 0.1, 0.4]}
    row = aggregate(CFG, [_result(0, phases=phases), _result(1, phases=phases)])
    assert row["latency_samples_s"] == pytest.approx([0.61, 0.22, 0.63])
    assert row["latency_p50_s"] == pytest.approx(0.61)
    assert (row["transfer_encode_p50_s"], row["transfer_broadcast_p50_s"], row["transfer_decode_p50_s"]) == (0.2, 0.02, 0.1)


def test_malloc_trim_is_found_on_glibc() -> None:
    if not Path("/lib/x86_64-linux-gnu/libc.so.6").exists() and not Path("/usr/lib64/libc.so.6").exists():
        pytest.skip("not a glibc system")
    assert memory._malloc_trim() is not None

"""CUDA paths (NCCL, CUDA events, allocator and NVML memory). Skipped cleanly without a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.runner.suite import make_config, pre_launch_skip
from bench.runner.trial import run_trial
from bench.strategies import parse

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _run(tmp_path: Path, strategy: str, world_size: int, workload: str = "train") -> dict[str, object]:
    comp = parse(strategy)
    point = {"strategy": comp.canonical, "model": "gpt2-tiny", "workload": workload, "device": "cuda", "world_size": world_size}
    cfg = make_config("gpu", point, {"steps": 5, "warmup_steps": 2, "eval_batches": 1}, (), "gpu-test")
    assert pre_launch_skip(cfg, comp) is None
    row, _ = run_trial(cfg, "gpu", comp.params(), tmp_path / "logs")
    assert row["status"] == "ok", row.get("error")
    return row


def test_single_gpu_train_records_cuda_memory_and_events(tmp_path: Path) -> None:
    row = _run(tmp_path, "baseline", 1)
    assert row["backend"] == "nccl"
    assert row["mem_cuda_max_allocated_bytes_max"] > 0
    assert row["mem_cuda_max_reserved_bytes_max"] >= row["mem_cuda_max_allocated_bytes_max"]
    assert row["latency_p50_s"] > 0
    assert "wire_bytes_per_step" in row["null_reasons"]  # NCCL traffic is not on TCP sockets


def test_single_gpu_infer(tmp_path: Path) -> None:
    row = _run(tmp_path, "baseline", 1, "infer")
    assert row["gen_tokens_per_s"] > 0


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_two_gpu_ddp_bytes_and_bf16(tmp_path: Path) -> None:
    base = _run(tmp_path / "a", "baseline", 2)
    bf16 = _run(tmp_path / "b", "bf16_compress", 2)
    assert bf16["comm_logical_bytes_per_step"] == pytest.approx(base["comm_logical_bytes_per_step"] / 2)

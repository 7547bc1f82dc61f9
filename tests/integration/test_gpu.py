"""CUDA paths (NCCL, CUDA events, allocator, NVML memory and utilisation, precision, DataParallel, H2D input).

Skipped cleanly without a GPU; the 2-GPU cases skip on a machine with one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.runner.suite import make_config, pre_launch_skip
from bench.runner.trial import run_trial
from bench.strategies import parse

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
SETTINGS = {"steps": 5, "warmup_steps": 2, "eval_batches": 1}


def _config(strategy: str, world_size: int, workload: str = "train", **settings: Any) -> tuple[Any, Any]:
    comp = parse(strategy)
    point = {"strategy": comp.canonical, "model": "gpt2-tiny", "workload": workload, "device": "cuda", "world_size": world_size}
    return make_config("gpu", point, {**SETTINGS, **settings}, (), "gpu-test"), comp


def _run(tmp_path: Path, strategy: str, world_size: int, workload: str = "train", **settings: Any) -> dict[str, Any]:
    cfg, comp = _config(strategy, world_size, workload, **settings)
    assert pre_launch_skip(cfg, comp) is None
    row, _ = run_trial(cfg, "gpu", comp.params(), tmp_path / "logs")
    assert row["status"] == "ok", row.get("error")
    return row


def test_single_gpu_train_records_cuda_memory_events_and_utilisation(tmp_path: Path) -> None:
    row = _run(tmp_path, "baseline", 1)
    assert row["backend"] == "nccl"
    assert row["mem_cuda_max_allocated_bytes_max"] > 0
    assert row["mem_cuda_max_reserved_bytes_max"] >= row["mem_cuda_max_allocated_bytes_max"]
    assert row["mem_nvml_device_used_bytes_max"] >= row["mem_cuda_max_reserved_bytes_max"]
    assert row["latency_p50_s"] > 0
    assert 0 <= row["gpu_util_percent_mean"] <= 100 and len(row["gpu_util_percent_per_rank"]) == 1
    reasons = json.loads(row["null_reasons"])
    assert "wire_bytes_per_step" in reasons and "gpu_util_percent_mean" not in reasons  # NCCL is not on TCP sockets


def test_single_gpu_infer(tmp_path: Path) -> None:
    row = _run(tmp_path, "baseline", 1, "infer")
    assert row["gen_tokens_per_s"] > 0


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_autocast_trains_on_cuda(tmp_path: Path, dtype: str) -> None:
    row = _run(tmp_path, f"autocast(dtype={dtype})", 1)
    assert row["final_train_loss"] == row["final_train_loss"]  # not NaN
    metrics = json.loads(row["metrics"])
    assert (metrics.get("grad_scale", 0) > 0) == (dtype == "fp16")  # fp16 trains through a GradScaler


def test_data_parallel_needs_two_gpus_or_says_so() -> None:
    cfg, comp = _config("data_parallel", 1)
    reason = pre_launch_skip(cfg, comp)
    if torch.cuda.device_count() < 2:
        assert reason is not None and f"found {torch.cuda.device_count()}" in reason
    else:
        assert reason is None


@two_gpus
def test_two_gpu_ddp_bytes_bf16_half_and_autocast(tmp_path: Path) -> None:
    rows = {s: _run(tmp_path / s, s, 2) for s in ("baseline", "bf16_compress", "half", "autocast(dtype=fp16)")}
    base = rows["baseline"]["comm_logical_bytes_per_step"]
    assert rows["bf16_compress"]["comm_logical_bytes_per_step"] == base / 2
    assert json.loads(rows["bf16_compress"]["metrics"])["bf16_hook"].endswith("default_hooks.bf16_compress_hook")
    assert rows["half"]["comm_logical_bytes_per_step"] == base / 2
    assert rows["autocast(dtype=fp16)"]["comm_logical_bytes_per_step"] == base
    for row in rows.values():
        assert row["comm_logical_bytes_per_step_per_rank"] == [row["analytic_logical_bytes_per_step_per_rank"]] * 2


@two_gpus
def test_two_gpu_input_copies_host_to_device_and_broadcasts_over_nccl(tmp_path: Path) -> None:
    row = _run(tmp_path, "pad_dynamic", 2, "input", batch_size=4, seq_len=64, options={"source": "synthetic"})
    metrics = json.loads(row["metrics"])
    assert metrics["h2d_bytes_per_step"] == row["input_bytes_per_step"] == row["analytic_logical_bytes_per_step_per_rank"]


@two_gpus
def test_data_parallel_runs_in_one_process_and_its_copies_are_not_counted_as_zero(tmp_path: Path) -> None:
    row = _run(tmp_path, "data_parallel", 1, batch_size=8)
    assert json.loads(row["metrics"])["data_parallel_gpus"] == row["dp"] == torch.cuda.device_count()
    assert row.get("comm_logical_bytes_per_step") is None
    assert "flight recorder sees none" in json.loads(row["null_reasons"])["comm_logical_bytes_per_step"]

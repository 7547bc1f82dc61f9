"""Precision strategies, DataParallel and the GPU-utilisation sampler, without launching ranks."""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch

from bench.contracts import TrialConfig
from bench.errors import BenchError
from bench.meters.utilization import CPU_REASON, UtilSampler
from bench.models.zoo import MODELS, build_model, grad_dtype_bytes
from bench.strategies import data_parallel, parse, precision


def _cfg(strategy: str, device: str = "cpu", world_size: int = 2, workload: str = "train") -> TrialConfig:
    return TrialConfig(suite="t", strategy=strategy, model="gpt2-tiny", workload=workload, device=device, world_size=world_size)


def _reason(strategy: str, cfg: TrialConfig) -> str | None:
    return parse(strategy).skip_reason(cfg)


def test_fp16_autocast_is_skipped_on_a_cpu_without_native_fp16_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    reason = _reason("autocast(dtype=fp16)", _cfg("autocast(dtype=fp16)"))
    assert reason is not None and "no avx512_fp16 or amx_fp16" in reason and "fallback" in reason
    assert _reason("autocast", _cfg("autocast")) is None  # bf16 runs on CPU
    assert _reason("autocast(dtype=fp16)", _cfg("autocast(dtype=fp16)", device="cuda")) is None
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512f", "amx_fp16"}))
    assert _reason("autocast(dtype=fp16)", _cfg("autocast(dtype=fp16)")) is None


def test_precision_policies_are_exclusive_and_half_is_for_training() -> None:
    with pytest.raises(BenchError, match="autocast and half are both precision settings; pick one"):
        parse("autocast+half")
    assert "does not apply to the infer workload" in (_reason("half", _cfg("half", workload="infer")) or "")
    assert _reason("autocast", _cfg("autocast", workload="infer")) is None
    assert parse("autocast(dtype=fp16)").canonical == "autocast(dtype=fp16)" and parse("autocast(dtype=bf16)").canonical == "autocast"
    with pytest.raises(BenchError, match="autocast.dtype"):
        parse("autocast(dtype=fp8)")


def test_half_makes_gradients_two_bytes_and_the_ddp_model_follows() -> None:
    model = build_model(MODELS.get("gpt2-tiny"), seed=0)
    assert grad_dtype_bytes(model) == 4
    assert grad_dtype_bytes(model.half()) == 2
    model.transformer.wte.float()
    with pytest.raises(ValueError, match="element sizes"):
        grad_dtype_bytes(model)


def test_half_with_adamw_diverges_as_documented_and_trains_with_a_larger_eps() -> None:
    """The `half` docstring's claim: AdamW's default eps is 0 in fp16, so the second loss is NaN."""
    assert float(torch.tensor(1e-8, dtype=torch.float16)) == 0.0

    def losses(eps: float) -> list[float]:
        model = build_model(MODELS.get("gpt2-tiny"), seed=0).half()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, eps=eps)
        out = []
        for i in range(2):
            ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(i))
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            out.append(float(loss.detach()))
        return out

    default = losses(1e-8)
    assert torch.isfinite(torch.tensor(default[0])) and torch.isnan(torch.tensor(default[1]))
    assert all(torch.isfinite(torch.tensor(losses(1e-4))))


@pytest.mark.parametrize(
    ("device", "world_size", "gpus", "needle"),
    [
        ("cuda", 2, 4, "world_size must be 1, got 2: nn.DataParallel is one process that drives every GPU"),
        ("cpu", 1, 0, "needs device=cuda and >= 2 GPUs"),
        ("cuda", 1, 1, "needs >= 2 GPUs in one process, found 1"),
    ],
)
def test_data_parallel_says_why_it_cannot_run(monkeypatch: pytest.MonkeyPatch, device: str, world_size: int, gpus: int, needle: str) -> None:
    monkeypatch.setattr(data_parallel, "visible_gpus", lambda: gpus)
    assert needle in (_reason("data_parallel", _cfg("data_parallel", device, world_size)) or "")


def test_data_parallel_runs_where_there_are_gpus_and_replaces_ddp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_parallel, "visible_gpus", lambda: 2)
    assert _reason("data_parallel", _cfg("data_parallel", "cuda", 1)) is None
    with pytest.raises(BenchError, match="cannot compose with data_parallel, which replaces DDP"):
        parse("data_parallel+fp16_compress")


def test_util_sampler_keeps_every_sample_and_one_at_stop() -> None:
    values = iter(range(1000))
    sampler = UtilSampler(torch.device("cuda", 0), interval_s=0.01, read=lambda: float(next(values)))
    sampler.start()
    time.sleep(0.1)
    util = sampler.stop()
    assert util.reason is None and len(util.samples_percent) >= 2
    assert util.samples_percent == [float(i) for i in range(len(util.samples_percent))]  # in order, none lost


def test_util_sampler_gives_a_reason_on_cpu_and_when_nvml_fails() -> None:
    cpu = UtilSampler(torch.device("cpu"))
    cpu.start()
    assert cpu.stop().reason == CPU_REASON

    def broken() -> float:
        raise RuntimeError("NVML Shared Library Not Found")

    gpu = UtilSampler(torch.device("cuda", 0), interval_s=0.01, read=broken)
    gpu.start()
    util = gpu.stop()
    assert util.samples_percent == [] and util.reason and "NVML Shared Library Not Found" in util.reason


# --- the bf16 hook's arithmetic against torch's own hook, on a fake group of k identical ranks --------


class _Bucket:
    def __init__(self, buffer: torch.Tensor) -> None:
        self._buffer = buffer

    def buffer(self) -> torch.Tensor:
        return self._buffer


class _Group:
    def __init__(self, k: int) -> None:
        self.k = k

    def size(self) -> int:
        return self.k


def _run_hook(hook: Any, x: torch.Tensor, k: int, monkeypatch: pytest.MonkeyPatch) -> torch.Tensor:
    """`hook` on a copy of `x`, where the all_reduce sums k identical ranks' tensors in their dtype."""

    class _Work:
        def __init__(self, t: torch.Tensor) -> None:
            self.t = t

        def get_future(self) -> torch.futures.Future[list[torch.Tensor]]:
            fut: torch.futures.Future[list[torch.Tensor]] = torch.futures.Future()
            fut.set_result([self.t])
            return fut

    def fake_all_reduce(t: torch.Tensor, group: Any = None, async_op: bool = False) -> _Work:
        total = t.clone()
        for _ in range(group.size() - 1):
            total = total + t  # one rounding per addition, in t's dtype
        t.copy_(total)
        return _Work(t)

    monkeypatch.setattr(torch.distributed, "all_reduce", fake_all_reduce)
    buffer = x.clone()
    return hook(_Group(k), _Bucket(buffer)).wait()


@pytest.mark.parametrize("k", [2, 3, 5])
def test_bf16_cast_hook_matches_torchs_hook_and_divides_before_the_sum(monkeypatch: pytest.MonkeyPatch, k: int) -> None:
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    from bench.strategies.grad_compression.hooks import bf16_cast_hook

    x = torch.randn(4096, generator=torch.Generator().manual_seed(k)) * 1e-3
    ours = _run_hook(bf16_cast_hook, x, k, monkeypatch)
    theirs = _run_hook(default_hooks.bf16_compress_hook, x, k, monkeypatch)
    assert ours.dtype == torch.float32 and torch.equal(ours, theirs)
    # By hand: cast, divide in bf16, sum in bf16, back to fp32.
    part = x.to(torch.bfloat16).div_(k)
    by_hand = part.clone()
    for _ in range(k - 1):
        by_hand = by_hand + part
    assert torch.equal(ours, by_hand.float())
    if k == 3:  # dividing after the sum rounds differently: the test can tell where the hook divides
        after = x.to(torch.bfloat16)
        total = after.clone()
        for _ in range(k - 1):
            total = total + after
        assert not torch.equal(ours, total.div_(k).float())


def test_gpu_utilisation_columns_average_each_rank_then_the_ranks_or_give_the_reason() -> None:
    from bench.contracts import GpuUtil, WindowResult
    from bench.runner.rows import _gpu_util_columns

    def rank(util: GpuUtil | None) -> Any:
        window = WindowResult(step_times_s=[], memory=None, comm_records=[], comm_summary=None, wire=None, gpu_util=util)  # type: ignore[arg-type]
        return type("R", (), {"window": window})()

    reasons: dict[str, str] = {}
    got = _gpu_util_columns([rank(GpuUtil(samples_percent=[10, 30], interval_s=0.1)), rank(GpuUtil(samples_percent=[50], interval_s=0.1))], reasons)
    assert got == {"gpu_util_percent_mean": 35.0, "gpu_util_percent_per_rank": [20.0, 50.0]} and reasons == {}
    cpu = GpuUtil(samples_percent=[], interval_s=0.1, reason=CPU_REASON)
    assert _gpu_util_columns([rank(cpu), rank(cpu)], reasons) == {} and reasons["gpu_util_percent_mean"] == CPU_REASON

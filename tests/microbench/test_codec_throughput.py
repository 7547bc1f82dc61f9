"""Encode+decode throughput of the hand-written codecs vs torch's fp16 hook cast, per rank, without the collective."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture

from bench.strategies.grad_compression import codecs
from bench.strategies.grad_compression.hooks import QSGD, Sign, TopK

pytestmark = pytest.mark.microbench

SIZES = {"1M": 1 << 20, "16M": 1 << 24}
CODECS = {
    "topk_0.01": TopK(ratio=0.01, error_feedback=False),
    "sign": Sign(error_feedback=False),
    "qsgd_127": QSGD(levels=127),
}


def codec_round_trip(codec: TopK | Sign | QSGD, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """What a rank does to its own bucket in the hook, minus the all_gather: encode, pack, unpack, decode."""
    n, specs = x.numel(), codec.specs(x.numel())
    gen = torch.Generator().manual_seed(0)
    return lambda: codec.decode(codecs.unpack(codecs.pack(codec.encode(x, gen)), specs), n)


def fp16_round_trip(x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """torch's `fp16_compress_hook` around its all_reduce: cast to fp16 and divide (world of 2), copy back to fp32."""
    out = torch.empty_like(x)
    return lambda: out.copy_(x.to(torch.float16).div_(2))


def annotate(benchmark: BenchmarkFixture, n: int, payload_bytes: int) -> None:
    mean_s = benchmark.stats.stats.mean
    benchmark.extra_info.update(
        elements=n,
        payload_bytes=payload_bytes,
        bytes_per_element=payload_bytes / n,
        gb_per_s=4 * n / mean_s / 1e9,  # fp32 input gradient bytes through encode+decode per second
        threads=torch.get_num_threads(),
    )


def run(benchmark: BenchmarkFixture, fn: Callable[[], torch.Tensor]) -> None:
    # Few rounds: a 16M-element round trip takes up to a second on a shared 2-core machine.
    benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", CODECS)
def test_codec_encode_decode(benchmark: BenchmarkFixture, name: str, size: str) -> None:
    n, codec = SIZES[size], CODECS[name]
    x = torch.randn(n, generator=torch.Generator().manual_seed(0))
    benchmark.group = f"codec-{size}"
    run(benchmark, codec_round_trip(codec, x))
    annotate(benchmark, n, codec.payload_bytes(n))


@pytest.mark.parametrize("size", SIZES)
def test_fp16_hook_cast_reference(benchmark: BenchmarkFixture, size: str) -> None:
    n = SIZES[size]
    x = torch.randn(n, generator=torch.Generator().manual_seed(0))
    benchmark.group = f"codec-{size}"
    run(benchmark, fp16_round_trip(x))
    annotate(benchmark, n, 2 * n)

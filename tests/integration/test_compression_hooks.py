"""Top-k, sign and QSGD DDP hooks on 2 and 4 gloo ranks: averaged gradients and gathered bytes."""

# No `from __future__ import annotations`: DDP checks the spy hook's annotations as objects.
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record
from torch.nn.parallel import DistributedDataParallel as DDP

from bench.comm.accounting import CommAccountant
from bench.distributed.env import init_rank, shutdown
from bench.strategies.grad_compression import codecs
from bench.strategies.grad_compression.hooks import CompressionState, compression_hook, hook_payload_bytes, make_codec

pytestmark = pytest.mark.multirank

# (kind, params): every codec with its default-on options, written as data.
CASES: list[tuple[str, dict[str, Any]]] = [
    ("topk", {"ratio": 0.01, "error_feedback": True}),
    ("sign", {"error_feedback": True, "scaled": True}),
    ("sign", {"error_feedback": False, "scaled": False}),
    ("qsgd", {"levels": 127}),
    ("qsgd", {"levels": 1000, "error_feedback": True}),
]
STEPS = 3  # step 0 runs on DDP's initial buckets, later steps on the rebuilt ones


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)  # identical replicas; DDP would broadcast rank 0's anyway
    return torch.nn.Sequential(
        torch.nn.Linear(32, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
    )


class Spy:
    """Hook state: the real `CompressionState`, plus which parameters each bucket holds."""

    def __init__(self, inner: CompressionState, names: dict[torch.nn.Parameter, str]) -> None:
        self.inner = inner
        self.names = names
        self.buckets: dict[int, list[str]] = {}


def spy_hook(spy: Spy, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    spy.buckets[bucket.index()] = [spy.names[p] for p in bucket.parameters()]
    return compression_hook(spy.inner, bucket)


def run_case(kind: str, params: dict[str, Any], rank: int) -> dict[str, Any]:
    model = mlp()
    ddp = DDP(model, bucket_cap_mb=0.1)  # ~3 buckets of the 77k-parameter MLP
    state = CompressionState(make_codec(kind, params), seed=1, keep_payloads=True)
    spy = Spy(state, {p: n for n, p in model.named_parameters()})
    ddp.register_comm_hook(spy, spy_hook)
    gen = torch.Generator().manual_seed(100 + rank)  # each rank its own data, so gradients differ
    accountant = CommAccountant()
    for step in range(STEPS):
        ddp.zero_grad(set_to_none=True)
        if step == STEPS - 1:
            accountant.start()
        ddp(torch.randn(16, 32, generator=gen)).pow(2).mean().backward()
    records = accountant.stop()
    grads = dict(model.named_parameters())
    return {
        "buckets": {
            i: {
                "grad": torch.cat([grads[name].grad.reshape(-1) for name in names]),
                "payload": spy.inner.payloads[i].clone(),
            }
            for i, names in spy.buckets.items()
        },
        "all_gather_bytes": [r.msg_bytes for r in records if r.op == "all_gather"],
        "other_ops": sorted({r.op for r in records if r.op != "all_gather"}),
        "state_gathered_bytes": spy.inner.gathered_bytes,
        "state_sent_bytes": spy.inner.payload_bytes_sent,
    }


@record
def hooks_on_ranks(cases: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    env = init_rank("cpu", None)
    try:
        return [run_case(kind, params, env.rank) for kind, params in cases]
    finally:
        shutdown()


def expected_average(kind: str, params: dict[str, Any], payloads: list[torch.Tensor], n: int) -> torch.Tensor:
    codec = make_codec(kind, params)
    return torch.stack([codec.decode(codecs.unpack(p, codec.specs(n)), n) for p in payloads]).mean(0)


@pytest.mark.parametrize("world_size", [2])  # 4 ranks: test_grad_compression.py (signsgd)
def test_hooks_average_every_ranks_decoded_payload_and_gather_the_modelled_bytes(ranks: Any, world_size: int) -> None:
    outputs = ranks(hooks_on_ranks, CASES, world_size, timeout_s=120)
    for c, (kind, params) in enumerate(CASES):
        per_rank = [out[c] for out in outputs]
        buckets = per_rank[0]["buckets"]
        assert len(buckets) >= 2, "the test model should span several buckets"
        sizes = []
        for i in sorted(buckets):
            n = buckets[i]["grad"].numel()
            payloads = [r["buckets"][i]["payload"] for r in per_rank]
            assert {p.numel() for p in payloads} == {hook_payload_bytes(kind, n, params)}, (kind, i)
            want = expected_average(kind, params, payloads, n)
            for rank, r in enumerate(per_rank):
                got = r["buckets"][i]["grad"]
                torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7, msg=f"{kind} bucket {i} rank {rank}")
            sizes.append(n)
        # One all_gather per bucket, recorded at its total size: per-rank payload x world size.
        # DDP calls hooks in ascending bucket index, so the flight recorder's order is the bucket order.
        want_bytes = [hook_payload_bytes(kind, n, params) * world_size for n in sizes]
        for r in per_rank:
            assert r["all_gather_bytes"] == want_bytes, (kind, params)
            assert r["other_ops"] == []
            assert r["state_gathered_bytes"] == world_size * r["state_sent_bytes"]

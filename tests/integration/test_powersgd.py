"""torch's PowerSGD hooks via `bench.strategies.grad_compression.powersgd` on tiny GPT-2, 2 and 4 gloo ranks: no hang, exact payload."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd
from torch.distributed.elastic.multiprocessing.errors import record
from torch.nn.parallel import DistributedDataParallel as DDP
from transformers import GPT2Config, GPT2LMHeadModel

from bench.comm.accounting import CommAccountant
from bench.distributed.env import init_rank, shutdown
from bench.strategies.grad_compression.powersgd import _allow_2d_orthogonalize, register_powersgd

START_ITER = 2
STEPS = 5  # steps 2, 3 and 4 are compressed


def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(
        n_layer=2, n_embd=128, n_head=4, vocab_size=8192, n_positions=256, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0
    )
    return GPT2LMHeadModel(cfg)


# (hook, bucket_cap_mb, PowerSGDState options) as data. None keeps DDP's defaults: after its
# bucket rebuild they give 2 buckets (1 MiB first bucket), the layout on which torch's hook
# first failed. 0.25 MB gives 7 buckets, where the unwrapped hook fails on almost every run
# (abort or hang), so those cases catch a regression; warm_start=False has its own race.
Case = tuple[str, float | None, dict[str, Any]]
CASES: list[Case] = [
    ("layerwise", None, {}),
    ("layerwise", 0.25, {}),
    ("layerwise", 0.25, {"warm_start": False}),
    ("batched", None, {}),
]


def case_id(case: Case) -> str:
    hook, cap, options = case
    return "-".join([hook, f"cap{cap}", *(f"{k}={v}" for k, v in options.items())])


@record
def train_with_powersgd(case: Case) -> dict[str, Any]:
    hook, bucket_cap_mb, options = case
    env = init_rank("cpu", None)
    try:
        model = tiny_gpt2()
        ddp = DDP(model, **({} if bucket_cap_mb is None else {"bucket_cap_mb": bucket_cap_mb}))
        state = register_powersgd(
            ddp, matrix_approximation_rank=4, start_powerSGD_iter=START_ITER, batched=hook == "batched", **options
        )
        optimizer = torch.optim.SGD(ddp.parameters(), lr=1e-2)
        gen = torch.Generator().manual_seed(env.rank)
        accountant = CommAccountant()
        for step in range(STEPS):
            if step == START_ITER:
                assert state.compression_stats()[2] == 0, "compression started early"
                accountant.start()
            ids = torch.randint(0, 8192, (2, 32), generator=gen)
            ddp(input_ids=ids, labels=ids).loss.backward()
            if step == STEPS - 1:
                grads = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        records = accountant.stop()
        return {
            "iter": state.powersgd.iter,
            "stats": state.compression_stats(),
            "buckets": len(state.powersgd.error_dict),  # error feedback keeps one residual per bucket
            "ops": sorted({r.op for r in records}),
            "all_reduce_numel": sum(r.numel for r in records if r.op == "all_reduce"),
            "all_reduce_groups": len({r.group for r in records if r.op == "all_reduce"}),
            "grads": grads,
            "params": torch.cat([p.detach().reshape(-1) for p in model.parameters()]),
        }
    finally:
        shutdown()


# Each case once: the 7-bucket layout and the batched hook at 4 ranks, the others at 2 (make test's budget).
RUNS = [(2, CASES[2]), (4, CASES[1]), (4, CASES[3])]  # DDP's default 2 buckets: the registry sweep


@pytest.mark.multirank
@pytest.mark.parametrize(("world_size", "case"), RUNS, ids=[f"{n}-{case_id(c)}" for n, c in RUNS])
def test_powersgd_runs_compressed_steps_and_sends_what_its_stats_say(ranks: Any, world_size: int, case: Case) -> None:
    # A hang fails the test after timeout_s instead of blocking the run.
    outputs = ranks(train_with_powersgd, case, world_size, timeout_s=120)
    first = outputs[0]
    assert first["iter"] == STEPS and first["buckets"] >= 2
    rate, before, after = first["stats"]
    assert rate > 1 and 0 < after < before
    for out in outputs:
        assert out["stats"] == first["stats"]
        assert out["ops"] == ["all_reduce"]
        # The elements all-reduced over the compressed steps are exactly torch's "after compression" count.
        assert out["all_reduce_numel"] == after
        assert out["all_reduce_groups"] == first["buckets"]  # each bucket on its own group
        # All-reduced P, Q and uncompressed tensors: every rank applies the same gradient.
        torch.testing.assert_close(out["grads"], first["grads"], rtol=0, atol=0)
        torch.testing.assert_close(out["params"], first["params"], rtol=0, atol=0)


def test_batched_hook_orthogonalize_accepts_2d_matrices() -> None:
    _allow_2d_orthogonalize()
    _allow_2d_orthogonalize()  # idempotent: wrapping twice would still work, but must not stack
    assert not hasattr(psgd._orthogonalize.__wrapped__, "__wrapped__")
    for rank in (1, 2, 4):  # Gram-Schmidt for rank <= 2, QR above
        m = torch.randn(50, rank, generator=torch.Generator().manual_seed(rank))
        psgd._orthogonalize(m)
        torch.testing.assert_close(m.T @ m, torch.eye(rank), atol=1e-5, rtol=0)
    batch = torch.randn(3, 20, 4)
    psgd._orthogonalize(batch)  # torch's own 3-D path is unchanged
    torch.testing.assert_close(batch.transpose(1, 2) @ batch, torch.eye(4).expand(3, 4, 4), atol=1e-5, rtol=0)

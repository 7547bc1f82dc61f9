"""The byte accounting sees collectives from every issuer: FSDP2, DTensor tensor parallel, pipelining."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import record

from bench.comm.accounting import CommAccountant
from bench.distributed.env import init_rank, shutdown

pytestmark = pytest.mark.multirank

HIDDEN = 64


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(HIDDEN, 4 * HIDDEN), nn.ReLU(), nn.Linear(4 * HIDDEN, HIDDEN))


@record
def fsdp_step(_: object) -> list[dict[str, Any]]:
    from torch.distributed.fsdp import fully_shard

    init_rank("cpu", None)
    try:
        model = mlp()
        fully_shard(model)
        acc = CommAccountant()
        acc.start()
        model(torch.randn(8, HIDDEN)).sum().backward()
        return [{"op": r.op, "msg_bytes": r.msg_bytes, "dtype": r.dtype} for r in acc.stop()]
    finally:
        shutdown()


@pytest.mark.parametrize("world_size", [2])  # 4 ranks: test_partition.py checks these layouts exactly
def test_fsdp2_all_gathers_and_reduce_scatters_are_seen(ranks: Any, world_size: int) -> None:
    psi = sum(p.numel() * 4 for p in mlp().parameters())
    for records in ranks(fsdp_step, None, world_size):
        gathered = sum(r["msg_bytes"] for r in records if r["op"] == "all_gather")
        reduced = sum(r["msg_bytes"] for r in records if r["op"] in ("reduce_scatter", "all_reduce"))
        # One all_gather of every parameter: FSDP2 keeps the *root* module unsharded between
        # forward and backward. Gradients are reduce-scattered once - on gloo as an all_reduce
        # of the whole flat buffer. Every dim-0 here divides by n, so there is no padding.
        assert gathered == psi
        assert reduced == psi
        assert {r["op"] for r in records} <= {"all_gather", "all_reduce", "reduce_scatter"}


@record
def tensor_parallel_forward(_: object) -> dict[str, Any]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.debug import CommDebugMode
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    env = init_rank("cpu", None)
    try:
        mesh = init_device_mesh("cpu", (env.world_size,))
        model = parallelize_module(mlp(), mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})
        x = torch.randn(8, HIDDEN)
        acc = CommAccountant()
        acc.start()
        with CommDebugMode() as debug:
            model(x)
        records = acc.stop()
        return {
            "oracle": {str(k): v for k, v in debug.get_comm_counts().items()},
            "records": [{"op": r.op, "msg_bytes": r.msg_bytes} for r in records],
        }
    finally:
        shutdown()


@pytest.mark.parametrize("world_size", [2])  # 4 ranks: test_partition.py checks these layouts exactly
def test_dtensor_collectives_match_comm_debug_mode(ranks: Any, world_size: int) -> None:
    for out in ranks(tensor_parallel_forward, None, world_size):
        oracle_calls = sum(out["oracle"].values())
        assert oracle_calls == 1  # Megatron MLP forward: one all_reduce after the row-wise linear
        assert [r["op"] for r in out["records"]] == ["all_reduce"]
        assert out["records"][0]["msg_bytes"] == 8 * HIDDEN * 4  # b x h activations, fp32


@record
def pipeline_step(_: object) -> dict[str, Any]:
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B

    env = init_rank("cpu", None)
    try:
        torch.manual_seed(0)
        stages = [nn.Linear(HIDDEN, HIDDEN) for _ in range(env.world_size)]
        stage = PipelineStage(stages[env.rank], env.rank, env.world_size, torch.device("cpu"))
        microbatches = 4
        schedule = Schedule1F1B(stage, n_microbatches=microbatches, loss_fn=lambda out, y: out.sum())
        x = torch.randn(8, HIDDEN)

        def step() -> None:
            if env.rank == 0:
                schedule.step(x)
            elif env.rank == env.world_size - 1:
                schedule.step(target=torch.zeros(8, HIDDEN), losses=[])
            else:
                schedule.step()

        step()  # the first step also exchanges shape metadata (pickled objects) between stages
        acc = CommAccountant()
        acc.start()
        step()
        return {"rank": env.rank, "records": [{"op": r.op, "msg_bytes": r.msg_bytes} for r in acc.stop()]}
    finally:
        shutdown()


@pytest.mark.parametrize("world_size", [2])  # 4 ranks: test_partition.py checks these layouts exactly
def test_pipeline_send_recv_are_seen(ranks: Any, world_size: int) -> None:
    act = 8 * HIDDEN * 4  # the whole batch of activations; 4 microbatches of a quarter each
    for out in ranks(pipeline_step, None, world_size, timeout_s=120):
        sent = sum(r["msg_bytes"] for r in out["records"] if r["op"] == "send")
        received = sum(r["msg_bytes"] for r in out["records"] if r["op"] == "recv")
        first, last = out["rank"] == 0, out["rank"] == world_size - 1
        # Activations go forward, their gradients come back, once per stage boundary.
        assert sent == (0 if last else act) + (0 if first else act)
        assert received == (0 if first else act) + (0 if last else act)

"""Precision on 2 gloo ranks: autocast and half bytes against the cost model; the bf16 hook against torch's math."""

# No `from __future__ import annotations`: DDP checks the spy hook's annotations as objects.
import json
from typing import Any

import pandas as pd
import pytest
import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record
from torch.nn.parallel import DistributedDataParallel as DDP

from bench.comm.accounting import CommAccountant
from bench.distributed.env import init_rank, shutdown
from bench.models.zoo import MODELS, build_model, grad_bytes
from bench.runner import suite as suites
from bench.runner.sweep import run_sweep
from bench.storage.parquet import read_comm, read_results
from bench.strategies.grad_compression.hooks import bf16_cast_hook

pytestmark = pytest.mark.multirank

STRATEGIES = ["autocast", "half", "half+fp16_compress"]  # fp32 bytes come from the model itself
SUITE = f"""
name = "prectest"
[matrix]
strategies = {json.dumps(STRATEGIES)}
models = ["gpt2-tiny"]
workloads = ["train"]
world_sizes = [2]
[settings]
steps = 3
warmup_steps = 2
batch_size = 2
seq_len = 32
eval_batches = 1
profile_steps = 0
timeout_s = 240
"""


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    root = tmp_path_factory.mktemp("prec")
    path = root / "prectest.toml"
    path.write_text(SUITE)
    outcome = run_sweep(suites.load(str(path)), root / "results", progress=False)
    df = read_results([root / "results" / "prectest"])
    assert outcome.counts == {"ok": len(STRATEGIES)}, df[["strategy", "error"]]
    return df.set_index("strategy"), read_comm([root / "results" / "prectest"])


def test_measured_bytes_equal_the_cost_model(swept: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    df, _ = swept
    for strategy, row in df.iterrows():
        assert list(row.comm_logical_bytes_per_step_per_rank) == [row.analytic_logical_bytes_per_step_per_rank] * 2, strategy


def test_autocast_keeps_fp32_gradient_bytes_and_half_halves_them(swept: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    df, comm = swept
    fp32 = grad_bytes(build_model(MODELS.get("gpt2-tiny"), seed=0))  # gpt2-tiny has no buffers
    bytes_ = df["comm_logical_bytes_per_step_per_rank"].map(lambda b: b[0])
    assert bytes_["autocast"] == fp32
    assert bytes_["half"] == fp32 / 2
    # fp16_compress on fp16 buckets casts nothing: the same bytes as half alone (a model that
    # scaled the fp32 bytes by the hook's 2/4 would say a quarter).
    assert bytes_["half+fp16_compress"] == fp32 / 2
    dtypes = {s: set(comm[comm.trial_id == df.loc[s, "trial_id"]].dtype) for s in STRATEGIES}
    assert dtypes["autocast"] == {"float32"} and dtypes["half"] == dtypes["half+fp16_compress"] == {"float16"}


def test_half_with_adamw_records_the_divergence_instead_of_hiding_it(swept: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    df, _ = swept
    half = df.loc["half"]
    assert pd.isna(half.final_train_loss) and json.loads(half.metrics)["nonfinite_params"] > 0
    assert not pd.isna(df.loc["autocast", "final_train_loss"]) and json.loads(df.loc["autocast", "metrics"]).get("grad_scale") is None


# --- the bf16 hook on gloo: torch's arithmetic, by hand -------------------------------------


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def local_gradient(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """This rank's own gradient, flattened in parameter order (no DDP, no communication)."""
    model.zero_grad(set_to_none=True)
    model(x).pow(2).mean().backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def bf16_step(rank: int, world_size: int) -> dict[str, Any]:
    """Every rank's own gradient, and this rank's after one DDP step through the hook.

    A function of its own so DDP is freed before the process group is destroyed (as a trial's
    state is): written inline, so that DDP was freed after `destroy_process_group`, a rank
    hung past the function's last line in 2 of 7 launches here.
    """
    x = torch.randn(16, 32, generator=torch.Generator().manual_seed(100 + rank))
    mine = local_gradient(mlp(), x)
    everyone = [torch.empty_like(mine) for _ in range(world_size)]
    dist.all_gather(everyone, mine)
    model = mlp()
    ddp = DDP(model, bucket_cap_mb=0.01)  # several buckets
    ddp.register_comm_hook(None, bf16_cast_hook)
    accountant = CommAccountant()
    accountant.start()
    ddp(x).pow(2).mean().backward()
    records = accountant.stop()
    got = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    return {"everyone": everyone, "got": got, "records": [(r.op, r.dtype, r.numel, r.msg_bytes) for r in records]}


@record
def bf16_hook_on_ranks(_: Any) -> dict[str, Any]:
    env = init_rank("cpu", None)
    try:
        return bf16_step(env.rank, env.world_size)
    finally:
        shutdown()


def test_bf16_cast_hook_is_torchs_bf16_compress_arithmetic(ranks: Any) -> None:
    outputs = ranks(bf16_hook_on_ranks, None, 2, timeout_s=120)
    grads = outputs[0]["everyone"]
    # torch's _compress_hook(torch.bfloat16): cast to bf16, divide by the world size in bf16,
    # sum across ranks (at 2 ranks one bf16 addition), copy back into fp32.
    parts = [g.to(torch.bfloat16).div_(2) for g in grads]
    expected = (parts[0] + parts[1]).to(torch.float32)
    assert not torch.equal(expected, (grads[0] + grads[1]) / 2)  # bf16 rounding is visible: the test can tell
    for out in outputs:
        assert torch.equal(out["got"], expected)
        numel = sum(n for op, _, n, _ in out["records"] if op == "all_reduce")
        assert numel == grads[0].numel() and {dt for op, dt, _, _ in out["records"]} == {"bfloat16"}
        assert sum(b for _, _, _, b in out["records"]) == 2 * numel  # 2 bytes per element: half of fp32
    # DDP registered it on gloo, which it refuses for any hook named bf16_compress_hook.


"""Partitioned layouts (FSDP2, tensor parallel with sequence and loss parallel, pipeline, 2-D) through the real launcher.

- Measured logical bytes equal the cost model exactly, on every rank, at world sizes 2 and 4.
- Model state per rank follows ZeRO's arithmetic, and orders ZeRO-3 < ZeRO-2 < DDP.
- The partitioned model computes the same loss as the whole model on the same batch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from torch.distributed.elastic.multiprocessing.errors import record

from bench.comm.cost_model import fsdp_padded_numel
from bench.contracts import TrialConfig
from bench.distributed.env import init_rank, shutdown
from bench.errors import BenchError
from bench.models.zoo import MODELS, build_model
from bench.runner import suite as suites
from bench.runner.sweep import run_sweep
from bench.storage.parquet import read_results
from bench.strategies import Aspect, effective, parse

pytestmark = pytest.mark.multirank

# (world size, model, strategy) as data; every row's bytes must equal its model exactly. gpt2-tiny's
# fsdp, tensor_parallel and pipeline at 2 ranks run in test_grad_compression.py's registry sweep.
# Sequence and loss parallel: Llama at tp=2 each alone, GPT-2 (fused q/k/v) at tp=4 both together.
SP_LP = [
    (2, "llama-tiny", "tensor_parallel(sp=true)"), (2, "llama-tiny", "tensor_parallel(loss_parallel=true)"),
    (4, "gpt2-tiny", "tensor_parallel(sp=true,loss_parallel=true)"),
]  # fmt: skip
CASES = [
    (2, "llama-tiny", "tensor_parallel"), (2, "llama-tiny", "fsdp(mp=bf16)+grad_accum(k=2)"), *SP_LP,
    (4, "gpt2-tiny", "fsdp"), (4, "gpt2-tiny", "fsdp(reshard_after_forward=false)"),
    (4, "gpt2-tiny", "tensor_parallel(tp=2)+fsdp"), (4, "gpt2-small", "pipeline(schedule=gpipe)"),  # 4 stages need 4 blocks
]  # fmt: skip
SETTINGS = """
[settings]
steps = 2
warmup_steps = 2  # DDP rebuilds its buckets (a broadcast) at iteration 1: keep it out of the window
batch_size = 4
seq_len = 32
eval_batches = 1
gen_tokens = 0
profile_steps = 0
timeout_s = 300
"""


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("partition")
    path = root / "partition.toml"
    axes = sorted({(ws, m) for ws, m, _ in CASES})
    text = f'name = "partition"\n[matrix]\nstrategies = {json.dumps(sorted({s for *_, s in CASES}))}\n'
    text += f"models = {json.dumps(sorted({m for _, m in axes}))}\nworkloads = [\"train\"]\nworld_sizes = [2, 4]\n"
    wanted = {(ws, m, s) for ws, m, s in CASES}
    for ws in (2, 4):
        for m in sorted({m for _, m in axes}):
            for s in sorted({s for *_, s in CASES}):
                if (ws, m, s) not in wanted:
                    text += f'[[exclude]]\nworld_size = {ws}\nmodel = "{m}"\nstrategy = "{s}"\n'
    path.write_text(text + SETTINGS)
    outcome = run_sweep(suites.load(str(path)), root / "results", progress=False)
    df = read_results([root / "results" / "partition"])
    assert outcome.counts == {"ok": len(CASES)}, df[["strategy", "world_size", "error"]].to_string()
    return df


def _row(df: pd.DataFrame, ws: int, model: str, strategy: str) -> pd.Series:
    canonical = parse(strategy).canonical
    return df[(df.world_size == ws) & (df.model == model) & (df.strategy == canonical)].iloc[0]


def test_measured_bytes_equal_the_layouts_cost_model_on_every_rank(swept: pd.DataFrame) -> None:
    for ws, model, strategy in CASES:
        row = _row(swept, ws, model, strategy)
        assert list(row.comm_logical_bytes_per_step_per_rank) == list(row.analytic_logical_bytes_per_step_by_rank), strategy


def test_sequence_parallel_trades_each_blocks_all_reduces_for_all_gathers_and_reduce_scatters(swept: pd.DataFrame) -> None:
    """Llama-tiny, b x s x h = 4 x 32 x 128 fp32: plain TP all-reduces 7 activations per block
    (one per linear); SP moves 4 all-gathers + 4 reduce-scatters per block (gloo logs the latter
    as all_reduce, same S), 2 all-gathers around the blocks, and the norms' weight gradients."""
    act, layers, hidden = 4 * 32 * 128 * 4, 2, 128
    plain = _row(swept, 2, "llama-tiny", "tensor_parallel").comm_logical_bytes_per_step_per_rank
    sp = _row(swept, 2, "llama-tiny", "tensor_parallel(sp=true)").comm_logical_bytes_per_step_per_rank
    norms = (2 * layers + 1) * hidden * 4  # RMSNorm weights: two per block and the final one
    assert list(plain) == [7 * layers * act] * 2
    assert list(sp) == [(4 * layers + 2) * act + 4 * layers * act + norms] * 2


def test_sequence_and_loss_parallel_losses_match_the_whole_model(swept: pd.DataFrame) -> None:
    """The first step's loss (before any update; every rank of a tp group reads data rank 0's batch)."""
    from bench.workloads.common import batches
    from bench.workloads.sources import MarkovChain

    for ws, model, strategy in SP_LP:
        row = _row(swept, ws, model, strategy)
        cfg = TrialConfig.from_dict(json.loads(row.config))
        batch = batches(cfg, MarkovChain.from_config(cfg.data), True, "train", 0, 1)[0]
        whole = build_model(MODELS.get(model), cfg.seed)
        with torch.no_grad():
            ref = float(whole(input_ids=batch.input_ids, labels=batch.labels).loss)
        assert row.loss_curve[0] == pytest.approx(ref, rel=1e-5, abs=1e-5), strategy


def test_parallel_degrees_are_the_real_mesh_sizes(swept: pd.DataFrame) -> None:
    degrees = {s: (r.dp, r.tp, r.pp) for s, r in ((s, _row(swept, ws, m, s)) for ws, m, s in CASES if ws == 4)}
    assert degrees == {
        "tensor_parallel(sp=true,loss_parallel=true)": (1, 4, 1), "fsdp": (4, 1, 1), "fsdp(reshard_after_forward=false)": (4, 1, 1),
        "tensor_parallel(tp=2)+fsdp": (2, 2, 1), "pipeline(schedule=gpipe)": (1, 1, 4),
    }  # fmt: skip


def test_zero3_moves_more_than_ddp_and_zero2_as_much_as_ddp(swept: pd.DataFrame) -> None:
    ddp = 4 * sum(p.numel() for p in build_model(MODELS.get("gpt2-tiny"), seed=0).parameters())  # DDP: Psi fp32
    zero3 = _row(swept, 4, "gpt2-tiny", "fsdp").analytic_logical_bytes_per_step_per_rank
    zero2 = _row(swept, 4, "gpt2-tiny", "fsdp(reshard_after_forward=false)").analytic_logical_bytes_per_step_per_rank
    # In nccl-tests' S per rank: DDP all-reduces Psi; ZeRO-2 all-gathers Psi and reduce-scatters Psi
    # (gloo: an all_reduce of the whole buffer, S = Psi); ZeRO-3 also re-gathers every block in backward.
    assert zero2 == 2 * ddp  # every dim 0 of gpt2-tiny divides by 4: no padding
    root = 8192 * 128 + 256 * 128 + 2 * 128  # wte, wpe, ln_f: gathered once, not re-gathered in backward
    assert zero3 == 3 * ddp - 4 * root


def test_model_state_follows_zero_arithmetic(swept: pd.DataFrame) -> None:
    model = build_model(MODELS.get("gpt2-tiny"), seed=0)
    shapes = [tuple(p.shape) for p in model.parameters()]
    n, params = 4, len(shapes)
    psi = sum(math.prod(s) for s in shapes)
    padded = sum(fsdp_padded_numel(s, n) for s in shapes)
    step = 4 * params  # AdamW keeps one float32 `step` per parameter
    ddp = (4 + 4 + 8) * psi + step  # every rank holds all of it (the sweep tests measure DDP's rows too)
    zero3 = _row(swept, n, "gpt2-tiny", "fsdp")
    zero2 = _row(swept, n, "gpt2-tiny", "fsdp(reshard_after_forward=false)")
    # ZeRO-3: (4 + 4 + 8) Psi / N_d per rank (fp32 weights, grads and Adam's two moments).
    assert list(zero3.model_state_bytes_per_rank) == [(4 + 4 + 8) * padded // n + step] * n
    assert zero3.model_state_peak_bytes_max < zero2.model_state_peak_bytes_max < ddp


@record
def first_loss(payload: tuple[str, str]) -> dict[str, Any]:
    """The partitioned model's loss on one batch, beside the whole model's on the same batch."""
    from bench.workloads.common import batches, build_state
    from bench.workloads.sources import MarkovChain

    strategy, model = payload
    env = init_rank("cpu", None)
    try:
        cfg = TrialConfig(suite="t", strategy=strategy, model=model, workload="train", world_size=env.world_size,
                          batch_size=4, seq_len=32)  # fmt: skip
        aspects = (Aspect.MODEL, Aspect.PRECISION, Aspect.LAYOUT, Aspect.COMM, Aspect.LOOP)
        state = build_state(cfg, effective(parse(strategy), "train"), env, aspects)
        batch = batches(cfg, MarkovChain.from_config(cfg.data), True, "train", 0, 1)[0]
        whole = build_model(MODELS.get(model), cfg.seed)
        ref = float(whole(input_ids=batch.input_ids, labels=batch.labels).loss)
        if state.train_batch is not None:
            loss = state.train_batch(batch)
        else:
            loss = state.train_module(input_ids=batch.input_ids, labels=batch.labels).loss
        return {"loss": None if loss is None else float(loss), "ref": ref}
    finally:
        shutdown()


@pytest.mark.parametrize(
    ("strategy", "model"),
    [("fsdp", "gpt2-tiny"), ("tensor_parallel", "gpt2-tiny"), ("pipeline", "llama-tiny")],
)
def test_partitioned_losses_match_the_whole_model(ranks: Any, strategy: str, model: str) -> None:
    outs = ranks(first_loss, (strategy, model), 2)
    losses = [o for o in outs if o["loss"] is not None]
    assert losses, "no rank reported a loss"
    for o in losses:
        assert o["loss"] == pytest.approx(o["ref"], rel=1e-5, abs=1e-5)


@pytest.mark.parametrize(
    ("strategy", "ws", "message"),
    [
        ("tensor_parallel(tp=3)", 4, "tp=3 does not divide world_size=4"),
        ("tensor_parallel(tp=2)", 4, "must multiply to world_size=4"),
        ("tensor_parallel(tp=2)+fsdp+fp16_compress", 4, "fp16_compress configures DDP and cannot compose"),
        ("pipeline+grad_accum", 2, "micro-batches are its accumulation"),
        ("tensor_parallel(sp=true,tp=3)", 3, "tp=3 must divide seq_len=64"),
        ("tensor_parallel(loss_parallel=true,tp=3)", 3, "must divide gpt2-tiny's vocab of 8192"),
    ],
)
def test_impossible_layouts_are_errors_before_launch(strategy: str, ws: int, message: str) -> None:
    from bench.runner.suite import check_composition, make_config

    with pytest.raises(BenchError, match=message):
        comp = parse(strategy)
        cfg = make_config("t", {"strategy": comp.canonical, "model": "gpt2-tiny", "workload": "train", "world_size": ws}, {},
                          (), where="test")  # fmt: skip
        check_composition(comp, cfg, where="test")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
@pytest.mark.parametrize(
    "strategy", ["fsdp", "fsdp(mp=bf16)", "tensor_parallel", "tensor_parallel(sp=true,loss_parallel=true)", "pipeline"]
)
def test_layouts_on_nccl_match_their_cost_model(tmp_path: Path, strategy: str) -> None:
    """On NCCL the reduce-scatter is a real one; the model follows the backend."""
    from bench.runner.suite import make_config, pre_launch_skip
    from bench.runner.trial import run_trial

    comp = parse(strategy)
    point = {"strategy": comp.canonical, "model": "gpt2-tiny", "workload": "train", "device": "cuda", "world_size": 2}
    cfg = make_config("gpu", point, {"steps": 2, "warmup_steps": 2, "eval_batches": 1, "profile_steps": 0}, (), "gpu-test")
    assert pre_launch_skip(cfg, comp) is None
    row, _ = run_trial(cfg, "gpu", comp.params(), tmp_path / "logs")
    assert row["status"] == "ok", row.get("error")
    assert row["backend"] == "nccl"
    assert row["comm_logical_bytes_per_step_per_rank"] == row["analytic_logical_bytes_per_step_by_rank"]

"""Stored result fixtures for the report tests: realistic rows written through the real RunWriter.

Every row is built from a real `TrialConfig` (so its trial id, history key and `config` JSON are
what a sweep would store) with seeded, noisy latency samples. `write_sample` writes a results tree
that exercises every section of the report: several workloads, a strategy name shared by rows that
differ in options, seeds, world sizes, collectives, a failed and a skipped trial, and a history of
eight runs with a persistent latency step.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bench.contracts import DataConfig, TrialConfig
from bench.storage.parquet import RunWriter
from bench.system import history_key

T0 = datetime(2026, 1, 5, 2, 0, tzinfo=timezone.utc)
ENV: dict[str, Any] = {
    "torch_version": "2.13.0+cpu", "transformers_version": "5.24.0", "python_version": "3.11.7",
    "cpu_model": "AMD EPYC", "cpu_cores": 2, "gpu_name": None, "gpu_count": 0, "gpu_driver": None,
    "cuda_version": None, "hostname": "ci-runner",
}  # fmt: skip


@dataclass
class Run:
    """One sweep's rows, written as RUN_ID.parquet (+ .comm.parquet) under `root/suite`."""

    suite: str
    run_id: str
    sha: str
    started: datetime
    rows: list[dict[str, Any]] = field(default_factory=list)
    comm: list[dict[str, Any]] = field(default_factory=list)

    def write(self, root: Path) -> Path:
        w = RunWriter(root / self.suite, self.run_id)
        for row in self.rows:
            w.add(row, [c for c in self.comm if c["trial_id"] == row["trial_id"]])
        return w.trials_path


def samples(rng: np.random.Generator, median_s: float, n: int = 30, noise: float = 0.03) -> list[float]:
    """Step times around `median_s` with a realistic right-skewed noise."""
    return list(median_s * np.exp(rng.normal(0.0, noise, n)))


def trial(
    run: Run,
    strategy: str,
    model: str = "gpt2-tiny",
    workload: str = "train",
    *,
    rng: np.random.Generator,
    world_size: int = 2,
    latency_s: float = 0.1,
    status: str = "ok",
    error: str | None = None,
    options: dict[str, Any] | None = None,
    seed: int = 0,
    env: dict[str, Any] | None = None,
    network: str | None = None,
    launches: int = 3,
    **measured: Any,
) -> dict[str, Any]:
    """A full trial row of `run` (appended to it); `measured` sets any measurement column.

    `network` makes it a trial of 2 namespace nodes on that link (rate only, e.g. "100mbit").
    """
    nodes = {"nnodes": 2, "network": network} if network else {}
    cfg = TrialConfig(suite=run.suite, strategy=strategy, model=model, workload=workload, world_size=world_size,
                      steps=30, seed=seed, options=options or {}, data=DataConfig(), **nodes)  # fmt: skip
    environment = {**ENV, **(env or {})}
    row: dict[str, Any] = {
        "schema_version": 1, "run_id": run.run_id, "trial_id": cfg.trial_id, "suite": run.suite, "strategy": strategy,
        "strategy_params": json.dumps([{"name": strategy, "params": {}}]), "model": model, "workload": workload,
        "device": "cpu", "backend": "gloo", "world_size": world_size, "dp": world_size, "tp": 1, "pp": 1,
        "batch_size": cfg.batch_size, "seq_len": cfg.seq_len, "steps": cfg.steps, "warmup_steps": cfg.warmup_steps,
        "status": status, "error": error, "git_sha": run.sha, "git_dirty": False,
        "started_at": run.started + timedelta(seconds=len(run.rows)), "history_key": history_key(cfg.case(), environment),
        "config": json.dumps(cfg.to_dict()), "null_reasons": "{}", "metrics": "{}", **environment,
    }  # fmt: skip
    if network:
        rate = None if network == "veth" else float(network.removesuffix("mbit")) * 1e6
        row.update(nnodes=2, network=network, network_rate_bps=rate)
    if model != "none":
        row["model_params"] = 1_478_144
    if status == "ok":
        times = samples(rng, latency_s)
        p = np.percentile(times, [50, 90, 99])
        tokens = {"train": cfg.batch_size * cfg.seq_len, "infer": cfg.batch_size * cfg.seq_len}.get(workload, 0)
        # Launches of the trial: each launch's p50 within ±2% of latency_s (drawn apart from `rng`,
        # so the step samples stay what they were); the row's p50 is their median.
        per_launch = list(latency_s * (1 + np.random.default_rng(zlib.crc32(f"{run.run_id}{cfg.trial_id}".encode())).uniform(-0.02, 0.02, launches)))
        lo, hi = (min(per_launch), max(per_launch)) if launches >= 3 else (None, None)
        row.update(latency_p50_s_per_launch=per_launch, latency_p50_s_ci_low=lo, latency_p50_s_ci_high=hi, launches=launches)
        p[0] = float(np.median(per_launch))
        row.update(latency_samples_s=times, latency_p50_s=p[0], latency_p90_s=p[1], latency_p99_s=p[2],
                   latency_mean_s=float(np.mean(times)), latency_std_s=float(np.std(times)), tokens_per_step=tokens,
                   tokens_per_s=tokens * world_size / p[0], mem_rss_peak_bytes_max=650_000_000,
                   mem_rss_peak_bytes_sum=650_000_000 * world_size)  # fmt: skip
    row.update(measured)
    run.rows.append(row)
    return row


def train_bytes(row: dict[str, Any], run: Run, grad_bytes: float, dtype: str = "float32", analytic: float | None = None) -> None:
    """DDP-like communication of one train row: measured, modelled and analytic bytes and rank 0's comm row."""
    ws = row["world_size"]
    total = grad_bytes * ws
    wire = total * (1 if ws > 1 else 0)
    row.update(comm_logical_bytes_per_step=total, comm_calls_per_step=2.0, wire_bytes_per_step=wire * 1.0004,
               modelled_wire_bytes_per_step=wire, wire_ratio=1.0004 if ws > 1 else None,
               analytic_logical_bytes_per_step_per_rank=analytic or grad_bytes,
               analytic_ops=json.dumps({"all_reduce": analytic or grad_bytes}),
               comm_time_s_per_step=0.02, comm_overlap_fraction=0.4)  # fmt: skip
    for rank in range(ws):
        run.comm.append(comm_row(row, rank, "all_reduce", dtype, grad_bytes))
        # DDP's bucket rebuild issues a 0-byte int64 all_reduce: its row must not repeat the analytic bytes.
        run.comm.append(comm_row(row, rank, "all_reduce", "int64", 0.0))


def comm_row(row: dict[str, Any], rank: int, op: str, dtype: str, bytes_per_step: float) -> dict[str, Any]:
    steps = row["steps"]
    return {
        "run_id": row["run_id"], "trial_id": row["trial_id"], "rank": rank, "op": op, "backend_op": f"gloo:{op}",
        "dtype": dtype, "group_size": row["world_size"], "calls": 2 * steps, "numel": int(bytes_per_step * steps / 4),
        "msg_bytes": int(bytes_per_step * steps), "msg_bytes_per_step": bytes_per_step, "time_s_per_call": 0.004,
        "algbw_Bps": bytes_per_step / 2 / 0.004, "busbw_Bps": bytes_per_step / 2 / 0.004,
    }  # fmt: skip


GRAD_BYTES = 5_912_576.0


def sample_run(rng: np.random.Generator) -> Run:
    """One run of the `sample` suite: train, infer and collectives, options and seeds, one failure, one skip."""
    run = Run("sample", "20260105T010000Z-sample", "1111111111aaaaaaaaaa", T0 - timedelta(days=1))
    for ws in (1, 2):
        for seed in (0, 1, 2) if ws == 2 else (0,):
            loss = 5.10 + 0.01 * seed
            base = trial(run, "baseline", rng=rng, world_size=ws, seed=seed, latency_s=0.110, eval_loss=loss,
                         final_train_loss=loss + 0.1, bayes_loss=1.06, loss_gap_to_floor=loss - 1.06,
                         loss_curve=list(np.linspace(9.0, loss, 20)))  # fmt: skip
            train_bytes(base, run, GRAD_BYTES)
            fp16 = trial(run, "fp16_compress", rng=rng, world_size=ws, seed=seed, latency_s=0.080, eval_loss=loss + 2e-5,
                         final_train_loss=loss + 0.1, bayes_loss=1.06, loss_gap_to_floor=loss - 1.06 + 2e-5,
                         loss_curve=list(np.linspace(9.0, loss, 20)))  # fmt: skip
            train_bytes(fp16, run, GRAD_BYTES / 2, "float16")
            topk = trial(run, "topk(ratio=0.01)", rng=rng, world_size=ws, seed=seed, latency_s=0.150, eval_loss=loss + 0.8,
                         loss_curve=list(np.linspace(9.0, loss + 0.8, 20)), mem_rss_peak_bytes_max=700_000_000)  # fmt: skip
            train_bytes(topk, run, GRAD_BYTES / 40)
    # The same strategy names under another optimizer: each must be paired with the baseline of its own options.
    sgd = {"optimizer": "sgd", "momentum": 0.9}
    base = trial(run, "baseline", rng=rng, options=sgd, latency_s=0.200, eval_loss=6.0)
    train_bytes(base, run, GRAD_BYTES)
    fp16 = trial(run, "fp16_compress", rng=rng, options=sgd, latency_s=0.204, eval_loss=6.0)
    train_bytes(fp16, run, GRAD_BYTES / 2, "float16")
    trial(run, "powersgd(rank=1)", rng=rng, status="failed", error_class="exception", failed_rank=1, failed_phase="window",
          error="Traceback (most recent call last):\n  File \"hooks.py\", line 12, in hook\n    tag = '<script>alert(1)</script>'\n"
                "RuntimeError: rank 1: gloo connection reset")  # fmt: skip
    trial(run, "bf16_compress", rng=rng, status="skipped", error="bf16_compress needs NCCL: gloo cannot all-reduce bfloat16")
    for name, size, ppl in (("baseline", 540e6, 14.5), ("quant_int8_wo", 220e6, 14.6), ("prune_l1", 400e6, 30.0)):
        trial(run, name, "smollm2-135m", "infer", rng=rng, world_size=1, latency_s=0.9 if name != "quant_int8_wo" else 1.3,
              model_bytes=size, model_sparse_bytes=size, perplexity=ppl, gen_tokens_per_s=20.0,
              mem_rss_peak_bytes_max=int(size * 2.5))  # fmt: skip
    for ws in (2, 3):
        for op in ("all_reduce", "broadcast"):
            size = 1_048_576
            factor = 2 * (ws - 1) / ws if op == "all_reduce" else 1.0
            t = 0.002 * ws * factor
            row = trial(run, "baseline", "none", "collectives", rng=rng, world_size=ws, latency_s=t,
                        options={"op": op, "size_bytes": size}, tokens_per_step=0, tokens_per_s=0.0,
                        comm_logical_bytes_per_step=size * ws, algbw_Bps=size / t, busbw_Bps=size / t * factor)  # fmt: skip
            run.comm.append(comm_row(row, 0, op, "float32", size))
    network_trials(run, rng)
    return run


# Per step, one way: fp32 gradients of gpt2-tiny and top-k's values + indices. With the computes
# below, the model t = compute + 8·bytes/rate puts top-k's break-even at 8·(5.9e6 − 0.3e6)/0.05 s = 896 Mbit/s.
NETWORK_BYTES = {"baseline": 5_912_576.0, "topk(ratio=0.01)": 300_000.0}
NETWORK_COMPUTE_S = {"baseline": 0.100, "topk(ratio=0.01)": 0.150}


def network_trials(run: Run, rng: np.random.Generator) -> None:
    """baseline and top-k across 2 namespace nodes on the unshaped veth and three shaped links, following the model."""
    for strategy, nbytes in NETWORK_BYTES.items():
        for network, rate in (("veth", 20e9), ("10000mbit", 10e9), ("1000mbit", 1e9), ("100mbit", 1e8)):
            t = NETWORK_COMPUTE_S[strategy] + 8 * nbytes / rate
            trial(run, strategy, "gpt2-small", rng=rng, network=network, latency_s=t, link_bytes_per_step=2 * nbytes,
                  comm_calls_per_step=2.0)  # fmt: skip


def nightly_runs(rng: np.random.Generator, n: int = 8, step_at: int = 4) -> list[Run]:
    """`n` nightly runs, one commit each; fp16_compress's latency steps up 30% from run `step_at` on."""
    runs = []
    for i in range(n):
        run = Run("nightly", f"{(T0 + timedelta(days=i)):%Y%m%dT%H%M%SZ}-n{i:02d}", f"{i:02d}" * 20, T0 + timedelta(days=i))
        base = trial(run, "baseline", "bert-tiny", rng=rng, latency_s=0.110, eval_loss=5.9)
        train_bytes(base, run, GRAD_BYTES)
        fp16 = trial(run, "fp16_compress", "bert-tiny", rng=rng, latency_s=0.080 * (1.3 if i >= step_at else 1.0), eval_loss=5.9)
        train_bytes(fp16, run, GRAD_BYTES / 2, "float16")
        runs.append(run)
    return runs


def write_sample(root: Path, seed: int = 0) -> Path:
    """The whole sample results tree under `root`; returns `root`."""
    rng = np.random.default_rng(seed)
    for run in [sample_run(rng), *nightly_runs(rng)]:
        run.write(root)
    return root


if __name__ == "__main__":  # python -m tests.unit.report_fixtures DIR: the sample results, for a sample report
    import sys

    print(write_sample(Path(sys.argv[1])))

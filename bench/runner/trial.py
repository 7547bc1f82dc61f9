"""One trial: launch its ranks, check their `RankResult`s against the contracts, and hand them to `rows`.

The launch path (spawn, forkserver, namespace nodes, real nodes) is decided here; what the
row holds is `bench.runner.rows`'s business. Rows that come from no result (skipped before
or after launch, failed launches) are built here.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.contracts import MEASUREMENT_VERSION, RankResult, RankSkipped, TrialConfig, rank_output_from_dict
from bench.distributed import forkserver
from bench.distributed.env import backend_for, threads_for
from bench.distributed.forkserver import DEFAULT_START_METHOD
from bench.distributed.launch import LaunchResult, Placement, launch
from bench.models.zoo import MODELS, weights_source
from bench.network.netns import NetnsUnavailable
from bench.network.spec import parse_network
from bench.runner.nodes import launch_in_namespaces
from bench.runner.phases import failure_columns, phase_columns
from bench.runner.rows import aggregate, check_metrics, comm_rows
from bench.runner.worker import rank_main
from bench.storage.schema import SCHEMA_VERSION
from bench.system import environment, history_key, now_utc
from bench.workloads import WORKLOADS


def _weights_source(cfg: TrialConfig) -> str | None:
    if not WORKLOADS.get(cfg.workload).needs_model:
        return None
    return weights_source(MODELS.get(cfg.model), cfg.seed)


def base_row(cfg: TrialConfig, run_id: str, strategy_params: list[dict[str, Any]]) -> dict[str, Any]:
    env = environment()
    threads = threads_for(cfg.world_size, cfg.threads_per_rank)
    return {
        "schema_version": SCHEMA_VERSION,
        "measurement_version": MEASUREMENT_VERSION,
        "run_id": run_id,
        "trial_id": cfg.trial_id,
        "suite": cfg.suite,
        "strategy": cfg.strategy,
        "strategy_params": json.dumps(strategy_params),
        "model": cfg.model,
        "weights_source": _weights_source(cfg),
        "workload": cfg.workload,
        "device": cfg.device,
        "backend": backend_for(cfg.device),
        "world_size": cfg.world_size,
        "nnodes": cfg.nnodes,
        **_network_columns(cfg),
        "dp": cfg.world_size,
        "tp": 1,
        "pp": 1,
        "batch_size": cfg.batch_size,
        "seq_len": cfg.seq_len,
        "steps": cfg.steps,
        "warmup_steps": cfg.warmup_steps,
        "seed": cfg.seed,
        **{k: env[k] for k in ("git_sha", "git_dirty", "torch_version", "transformers_version", "python_version")},
        "packages": json.dumps(env["packages"]),
        **{k: env[k] for k in ("cpu_model", "cpu_cores", "gpu_name", "gpu_count", "gpu_driver", "cuda_version", "hostname")},
        "threads_per_rank": threads,
        "oversubscribed": cfg.world_size * threads > env["cpu_cores"],
        "pin_policy": cfg.pin,
        "started_at": now_utc(),
        "history_key": history_key(cfg.case(), env),
        "config": json.dumps(cfg.to_dict(), sort_keys=True),
    }


def packed_columns(cfg: TrialConfig, packed_with: Sequence[str]) -> dict[str, Any]:
    """`packed_with`, and for a packed trial a history key of its own: its timings compete
    with its neighbours' and compare only with other packed rows."""
    out: dict[str, Any] = {"packed_with": list(packed_with)}
    if packed_with:
        out["history_key"] = history_key({**cfg.case(), "packed": True}, environment())
    return out


def _network_columns(cfg: TrialConfig) -> dict[str, Any]:
    spec = parse_network(cfg.network) if cfg.network is not None else None
    return {
        "network": cfg.network,
        "network_rate_bps": spec.rate_bps if spec else None,
        "network_delay_s": spec.delay_s if spec else None,
    }


def skipped_row(base: dict[str, Any], reason: str) -> dict[str, Any]:
    return {**base, "status": "skipped", "error": reason}


def failed_row(
    base: dict[str, Any], error: str, result: LaunchResult | None = None, *, error_class: str | None = None
) -> dict[str, Any]:
    """A `failed` row; its class is the launch's unless the failure came after it (contract, aggregation)."""
    row = {**base, "status": "failed", "error": error, "error_class": error_class}
    if result is not None:
        row.update(trial_wall_s=result.wall_s, launcher_cpu_s=result.launcher_cpu_s, log_dir=result.log_dir)
        row.update(failed_rank=result.failed_rank, stderr_tail=result.stderr_tail)
        row["error_class"] = error_class or result.error_class
        if result.error is not None:  # the launch itself failed: its ranks' journals say where
            row.update(failure_columns(result))
    return row


def run_trial(
    cfg: TrialConfig,
    run_id: str,
    strategy_params: list[dict[str, Any]],
    log_dir: Path,
    *,
    launch_method: str = DEFAULT_START_METHOD,
    placement: Placement | None = None,
    packed_with: Sequence[str] = (),
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Launch `cfg` on its ranks (`launch_method`: spawn or forkserver) and return (trial
    row, per-collective rows).

    Across real nodes (`placement`), only the node holding global rank 0 gets a row; the
    others get (None, []). `packed_with`: the trials running beside this one on other cores
    (`bench.runner.packing`), recorded in the row.
    """
    launch_method = forkserver.method_for(cfg.device, launch_method)
    base = {**base_row(cfg, run_id, strategy_params), "launch_method": launch_method}
    base.update(packed_columns(cfg, packed_with))
    if cfg.network is not None:
        try:
            result = launch_in_namespaces(cfg, log_dir)
        except NetnsUnavailable as exc:
            return skipped_row(base, f"cannot emulate network {cfg.network!r} here: {exc}"), []
    elif cfg.nnodes > 1:
        if placement is None or placement.nnodes != cfg.nnodes:
            return skipped_row(base, f"nnodes={cfg.nnodes} without a network: run one commbench per node with "
                                     f"--nnodes {cfg.nnodes} --node-rank K --rdzv-endpoint HOST:PORT"), []  # fmt: skip
        result = launch(rank_main, cfg.to_dict(), nprocs=cfg.world_size // cfg.nnodes, log_dir=log_dir,
                        timeout_s=cfg.timeout_s, start_method=launch_method, nnodes=cfg.nnodes,
                        node_rank=placement.node_rank, rdzv_endpoint=placement.rdzv_endpoint,
                        run_id=f"commbench-{cfg.trial_id}")  # fmt: skip
    else:
        result = launch(rank_main, cfg.to_dict(), nprocs=cfg.world_size, log_dir=log_dir, timeout_s=cfg.timeout_s,
                        start_method=launch_method)  # fmt: skip
    base["launch_method"] = result.start_method  # namespace nodes launch with their own default
    if result.error is None and not result.holds_rank0:
        return None, []
    if result.error is not None:
        where = f" (rank {result.failed_rank})" if result.failed_rank is not None else ""
        return failed_row(base, f"{result.error}{where}", result), []
    try:
        outputs = [rank_output_from_dict(result.outputs[r]) for r in sorted(result.outputs)]
        check_metrics(cfg, [o for o in outputs if isinstance(o, RankResult)])
    except TypeError as exc:  # a rank broke the result contract: this trial fails, the sweep goes on
        return failed_row(base, f"rank result does not match bench.contracts: {exc}", result, error_class="contract"), []
    skips = [o for o in outputs if isinstance(o, RankSkipped)]
    if skips:
        return {**skipped_row(base, skips[0].reason), "trial_wall_s": result.wall_s, "log_dir": result.log_dir}, []
    ranks = [o for o in outputs if isinstance(o, RankResult)]
    try:
        row = {**base, **aggregate(cfg, ranks), "status": "ok", "error": None}
    except Exception:
        failed = failed_row(base, "aggregation failed:\n" + traceback.format_exc(limit=5), result, error_class="aggregation")
        reasons = {}
        failed.update(phase_columns(result, ranks[0].timeline if ranks else None, reasons), null_reasons=json.dumps(reasons))
        return failed, []
    row.update(trial_wall_s=result.wall_s, launcher_cpu_s=result.launcher_cpu_s, log_dir=result.log_dir)
    reasons = json.loads(row["null_reasons"])
    row.update(phase_columns(result, ranks[0].timeline, reasons))
    row["null_reasons"] = json.dumps(reasons)
    return row, comm_rows(run_id, cfg, ranks)

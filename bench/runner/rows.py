"""A trial's rows from its ranks' `RankResult`s: one result row plus per-collective rows.

Aggregation across ranks (docs/measurement.md):
- step latency: per step, the max over ranks (the step is done when the slowest rank
  is); the per-step max-min spread is kept beside it. A workload whose step is made of
  parts timed across ranks (transfer: encode, broadcast, decode) reports them, and the
  step is their sum;
- memory: per rank, and as max and sum over ranks;
- bytes: per rank and summed over ranks;
- loss: mean over ranks per step.

Metrics that fill a column say so in their declaration (`Strategy.metrics`,
`Workload.metrics`): rank 0's value goes to that column, so no list here maps them by hand.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from bench.comm.cost_model import BUS_FACTOR, bus_factor
from bench.comm.cost_model import wire as wire_model
from bench.contracts import Accuracy, RankResult, TrialConfig
from bench.distributed.env import backend_for
from bench.meters.latency import percentiles
from bench.network.netns import TCP_HEADER_BYTES
from bench.strategies import STRATEGIES, effective, parse
from bench.strategies.metrics import Metric, by_name, check_recorded
from bench.workloads import WORKLOADS

EXACT_RSS = "kernel-VmHWM"
# Columns of the parts a workload times inside its step (RankResult.step_parts_s).
STEP_PART_COLUMNS = {
    "encode": "transfer_encode_p50_s", "broadcast": "transfer_broadcast_p50_s", "decode": "transfer_decode_p50_s",
}  # fmt: skip


def _stack_latency(outputs: list[RankResult]) -> tuple[list[float], list[float]]:
    """Per step: the latency (the parts' sum where the step has parts, else the slowest
    rank's step) and the max-min spread of the ranks' own step timers."""
    per_rank = np.array([o.window.step_times_s for o in outputs], dtype=np.float64)
    spread = (per_rank.max(axis=0) - per_rank.min(axis=0)).tolist()
    parts = outputs[0].step_parts_s
    if parts:
        return np.array(list(parts.values()), dtype=np.float64).sum(axis=0).tolist(), spread
    return per_rank.max(axis=0).tolist(), spread


def _maxsum(values: list[int | None]) -> tuple[int | None, int | None]:
    present = [v for v in values if v is not None]
    return (max(present), sum(present)) if present else (None, None)


def _sample(curve: list[float], points: int) -> list[float]:
    if len(curve) <= points:
        return curve
    idx = np.linspace(0, len(curve) - 1, points).round().astype(int)
    return [curve[i] for i in idx]


def unresolved_groups(outputs: list[RankResult]) -> list[str]:
    """Process groups of recorded collectives whose size could not be resolved (gone too soon)."""
    return sorted({r["group"] for o in outputs for r in o.window.comm_records if r["group_size"] is None})


def modelled_wire(outputs: list[RankResult], backend: str) -> float | None:
    """Cost model applied to what each rank issued: bytes it should receive, summed over ranks.

    None when a collective's group size is unknown: the model needs it.
    """
    algorithm = "gloo" if backend == "gloo" else "ring"
    total = 0.0
    for o in outputs:
        for r in o.window.comm_records:
            if r["op"] == "recv":
                total += r["msg_bytes"]
            elif r["op"] != "send":
                if r["group_size"] is None:
                    return None
                cost = wire_model(r["op"], r["msg_bytes"], r["group_size"], algorithm)
                total += cost.total / r["group_size"]
    return total


def aggregate(cfg: TrialConfig, outputs: list[RankResult]) -> dict[str, Any]:
    """Combine the ranks' results into the measurement columns of one row."""
    samples, spread = _stack_latency(outputs)
    stats = percentiles(samples)
    first = outputs[0]
    reasons: dict[str, str] = {}
    for o in outputs:
        reasons.update(o.window.memory.null_reasons)
    row: dict[str, Any] = {
        "latency_p50_s": stats["p50"],
        "latency_p90_s": stats["p90"],
        "latency_p99_s": stats["p99"],
        "latency_mean_s": stats["mean"],
        "latency_std_s": stats["std"],
        "latency_samples_s": samples,
        "latency_spread_s": spread,
        "tokens_per_step": first.tokens_per_step,
    }
    row.update(_throughput_columns(cfg, first.tokens_per_step, len(outputs), stats["p50"], reasons))
    row.update(_step_part_columns(first.step_parts_s, reasons))
    row.update(_memory_columns(outputs, reasons))
    if "model_state_bytes_max" not in row:
        reasons["model_state_bytes_max"] = reasons["model_state_peak_bytes_max"] = (
            "measured at the train workload's optimizer step"
        )
    row.update(_bytes_columns(outputs, cfg.steps, cfg, reasons))
    row.update(_link_columns(outputs, cfg.steps, row.get("modelled_wire_bytes_per_step"), reasons))
    row.update(_profile_columns(outputs, reasons))
    row.update(_accuracy_columns(cfg, outputs))
    row.update(metric_columns(first.metrics, cfg, reasons))
    row.update(_gpu_util_columns(outputs, reasons))
    row.update(_placement_columns(outputs, reasons))
    reasons.update(first.accuracy.null_reasons)
    row.update(_bandwidth_columns(first.metrics, stats["p50"], cfg.world_size, reasons))
    gen = [o.generate for o in outputs]
    if all(g is not None for g in gen):
        row["gen_tokens_per_s"] = sum(g.tokens_per_s for g in gen if g is not None)
    else:
        reasons["gen_tokens_per_s"] = "generation applies to causal LMs in the infer workload"
    row.update(dp=first.parallel.dp, tp=first.parallel.tp, pp=first.parallel.pp)
    parts = {"step_parts_s": first.step_parts_s} if first.step_parts_s else {}  # every step's parts, beside their medians
    row["metrics"] = json.dumps({**first.metrics, **parts}, default=str)
    row["null_reasons"] = json.dumps(reasons)
    return row


def _throughput_columns(
    cfg: TrialConfig, tokens_per_step: int | None, ranks: int, p50: float | None, reasons: dict[str, str]
) -> dict[str, Any]:
    if tokens_per_step is None:
        reasons["tokens_per_s"] = reasons["tokens_per_step"] = f"the {cfg.workload} workload processes no tokens"
        return {"tokens_per_s": None}
    return {"tokens_per_s": tokens_per_step * ranks / p50 if p50 else None}


def _step_part_columns(parts: dict[str, list[float]] | None, reasons: dict[str, str]) -> dict[str, Any]:
    """Median of each timed part of the step (transfer: encode, broadcast, decode)."""
    if not parts:
        for col in STEP_PART_COLUMNS.values():
            reasons[col] = "the step has no separately timed parts (transfer workload only)"
        return {}
    return {STEP_PART_COLUMNS[name]: float(np.median(series)) for name, series in parts.items()}


def _placement_columns(outputs: list[RankResult], reasons: dict[str, str]) -> dict[str, Any]:
    """Per rank, as JSON lists in rank order: the compute thread's pinned cores, every thread's cores."""
    places = [o.placement for o in outputs if o.placement is not None]
    if len(places) < len(outputs):
        reasons["pinned_cores"] = reasons["thread_cores"] = "a rank reported no placement"
        return {}
    row: dict[str, Any] = {}
    if any(p.pinned_cores is not None for p in places):
        row["pinned_cores"] = json.dumps([p.pinned_cores for p in places])
    else:
        reasons["pinned_cores"] = next((p.reason for p in places if p.reason), "not pinned")
    if all(p.thread_cores is not None for p in places):
        row["thread_cores"] = json.dumps([p.thread_cores for p in places])
    else:
        reasons["thread_cores"] = "thread masks are read from /proc/self/task (Linux only)"
    return row


def _memory_columns(outputs: list[RankResult], reasons: dict[str, str]) -> dict[str, Any]:
    mem = [o.window.memory for o in outputs]
    rss = [m.rss_peak for m in mem]
    methods = sorted({m.rss_peak_method for m in mem})
    sampled = [o.rank for o in outputs if o.window.memory.rss_peak_method != EXACT_RSS]
    if sampled:
        reasons["mem_rss_peak_bytes_max"] = reasons["mem_rss_peak_bytes_sum"] = (
            f"not exact on rank(s) {sampled}: VmHWM could not be reset, RSS was sampled every 5 ms (a lower bound)"
        )
    row: dict[str, Any] = {"mem_rss_peak_bytes_per_rank": rss, "mem_rss_peak_method": ",".join(methods)}
    row["mem_rss_peak_bytes_max"], row["mem_rss_peak_bytes_sum"] = _maxsum(rss)
    row["mem_cuda_max_allocated_bytes_max"], row["mem_cuda_max_allocated_bytes_sum"] = _maxsum(
        [m.cuda_max_allocated for m in mem]
    )
    row["mem_cuda_max_reserved_bytes_max"], _ = _maxsum([m.cuda_max_reserved for m in mem])
    row["mem_nvml_process_bytes_max"], _ = _maxsum([m.nvml_process_used for m in mem])
    row["mem_nvml_device_used_bytes_max"], _ = _maxsum([m.nvml_device_used for m in mem])
    held = [o.metrics.get("model_state_bytes") for o in outputs]
    if all(h is not None for h in held):
        row["model_state_bytes_per_rank"] = held
        row["model_state_bytes_max"] = max(held)  # type: ignore[type-var]
        row["model_state_peak_bytes_max"] = max(o.metrics["model_state_peak_bytes"] for o in outputs)
    return row


def _bandwidth_columns(metrics: dict[str, Any], p50: float | None, n: int, reasons: dict[str, str]) -> dict[str, Any]:
    """algbw/busbw for the collectives workload (one collective per step)."""
    op, size = metrics.get("op"), metrics.get("size_bytes")
    if op is None or not p50:
        reasons["algbw_Bps"] = reasons["busbw_Bps"] = "defined for the collectives workload; see the comm table per op"
        return {}
    algbw = size / p50
    factor = 1.0 if op == "send_recv" else bus_factor(op, n)
    return {"algbw_Bps": algbw, "busbw_Bps": algbw * factor}


def _profile_columns(outputs: list[RankResult], reasons: dict[str, str]) -> dict[str, Any]:
    profiles = [o.profile for o in outputs if o.profile is not None]
    times = [p.comm_time_s_per_step for p in profiles if p.comm_time_s_per_step is not None]
    overlaps = [p.overlap_fraction for p in profiles if p.overlap_fraction is not None]
    hidden = [p.hidden_s_per_step for p in profiles if p.hidden_s_per_step is not None]
    if not times:
        reasons["comm_time_s_per_step"] = next(
            (p.reason for p in profiles if p.reason), "no profiler pass (profile_steps=0) or no collectives"
        )
    if not overlaps:
        reasons["comm_overlap_fraction"] = reasons.get("comm_time_s_per_step", "no collectives in the profiled steps")
    if not hidden:
        reasons["comm_hidden_s_per_step"] = reasons["comm_overlap_fraction"]
    return {
        "comm_time_s_per_step": max(times) if times else None,
        "comm_overlap_fraction": float(np.mean(overlaps)) if overlaps else None,
        "comm_hidden_s_per_step": float(np.mean(hidden)) if hidden else None,
    }


def _analytic_columns(outputs: list[RankResult], reasons: dict[str, str]) -> dict[str, Any]:
    ops = outputs[0].analytic_ops
    if ops is None:
        reasons["analytic_logical_bytes_per_step_per_rank"] = "no whole-step cost model for this strategy/workload"
        reasons["analytic_ops"] = reasons["analytic_logical_bytes_per_step_per_rank"]
        return {}
    return {
        "analytic_logical_bytes_per_step_per_rank": float(sum(ops.values())),
        "analytic_logical_bytes_per_step_by_rank": [float(sum((o.analytic_ops or {}).values())) for o in outputs],
        "analytic_ops": json.dumps(ops),
    }


def _bytes_columns(outputs: list[RankResult], steps: int, cfg: TrialConfig, reasons: dict[str, str]) -> dict[str, Any]:
    windows = [o.window for o in outputs]
    out = _analytic_columns(outputs, reasons)
    if any(w.comm_summary is None for w in windows):
        for col in ("comm_logical_bytes_per_step", "wire_bytes_per_step", "modelled_wire_bytes_per_step"):
            reasons[col] = windows[0].comm_reason or "not measured"
        return out
    per_rank = [w.comm_summary["msg_bytes_per_step"] for w in windows if w.comm_summary is not None]
    out.update(
        comm_logical_bytes_per_step=float(sum(per_rank)),
        comm_logical_bytes_per_step_per_rank=per_rank,
        comm_calls_per_step=windows[0].comm_summary["calls"] / steps if windows[0].comm_summary else None,
    )
    modelled = modelled_wire(outputs, backend_for(cfg.device))
    if modelled is None:
        reasons["modelled_wire_bytes_per_step"] = reasons["wire_ratio"] = (
            f"size of process group(s) {unresolved_groups(outputs)} unknown: destroyed before the window closed"
        )
    else:
        modelled /= steps
        out["modelled_wire_bytes_per_step"] = modelled
    if any(w.wire is None for w in windows):
        reasons["wire_bytes_per_step"] = next((w.wire_reason for w in windows if w.wire_reason), "not measured")
        return out
    wire_rank = [w.wire["received"] / steps for w in windows if w.wire is not None]
    out["wire_bytes_per_step_per_rank"] = wire_rank
    out["wire_bytes_per_step"] = float(sum(wire_rank))
    if modelled:
        out["wire_ratio"] = out["wire_bytes_per_step"] / modelled
    elif modelled is not None:  # None: its reason is set above
        reasons["wire_ratio"] = "no modelled wire bytes (no collectives or a single rank)"
    return out


_LINK_COLUMNS = ("link_bytes_per_step", "link_packets_per_step", "link_payload_bytes_per_step", "link_ratio")


def _link_columns(outputs: list[RankResult], steps: int, modelled: float | None, reasons: dict[str, str]) -> dict[str, Any]:
    """The veth counters of each node (read by its local rank 0), summed: what crossed the link per step.

    Received bytes on both ends are every byte either node sent, as on the TCP_INFO side.
    """
    links = [o.window.link for o in outputs if o.window.link is not None]
    if not links:
        reason = next((o.window.link_reason for o in outputs if o.window.link_reason), None) or "not measured"
        reasons.update(dict.fromkeys(_LINK_COLUMNS, reason))
        return {}
    rx = sum(link["rx_bytes"] for link in links)
    packets = sum(link["rx_packets"] for link in links)
    out = {
        "link_bytes_per_step": rx / steps,
        "link_packets_per_step": packets / steps,
        "link_payload_bytes_per_step": (rx - TCP_HEADER_BYTES * packets) / steps,
    }
    if modelled:
        out["link_ratio"] = out["link_payload_bytes_per_step"] / modelled
    else:
        reasons["link_ratio"] = reasons.get("modelled_wire_bytes_per_step", "no modelled wire bytes")
    return out


# Accuracy fields that are result columns of the same name (`protocol` is `accuracy_protocol`,
# `null_reasons` go to the row's null_reasons).
_ACCURACY_COLUMNS = tuple(f.name for f in dataclasses.fields(Accuracy) if f.name not in ("protocol", "null_reasons"))


def declared_metrics(cfg: TrialConfig) -> dict[str, Metric]:
    """What a rank of `cfg` may record: its workload's metrics and its strategies' (implicit ones included)."""
    comp = effective(parse(cfg.strategy), cfg.workload)
    return by_name((*WORKLOADS.get(cfg.workload).metrics, *(m for s in comp.strategies for m in s.metrics)))


def check_metrics(cfg: TrialConfig, outputs: list[RankResult]) -> None:
    """Raise TypeError if a rank recorded an undeclared metric or one of the wrong type (a broken contract)."""
    declared = declared_metrics(cfg)
    for o in outputs:
        check_recorded(o.metrics, declared, f"rank {o.rank} of {cfg.strategy} on {cfg.workload}")


def column_metrics() -> list[tuple[str, Metric]]:
    """(owner, metric) for every registered metric that fills a column, each name once: workloads, then strategies."""
    owners = [(f"the {n} workload", WORKLOADS.get(n).metrics) for n in WORKLOADS.names()]
    owners += [(f"the {n} strategy", STRATEGIES.get(n).metrics) for n in STRATEGIES.names()]
    seen: dict[str, tuple[str, Metric]] = {}
    for owner, metrics in owners:
        for m in metrics:
            if m.column is not None and m.name not in seen:
                seen[m.name] = (owner, m)
    return list(seen.values())


def metric_columns(metrics: dict[str, Any], cfg: TrialConfig, reasons: dict[str, str]) -> dict[str, Any]:
    """Rank 0's value of each column-filling metric (null where not recorded, with the metric's reason if it has one)."""
    own = declared_metrics(cfg)
    out: dict[str, Any] = {}
    for owner, m in column_metrics():
        col = m.column
        assert col is not None
        out[col] = metrics.get(m.name)
        if out[col] is None and m.null_reason is not None:
            reasons[col] = m.null_reason if m.name in own else f"measured by {owner}"
    return out


def _gpu_util_columns(outputs: list[RankResult], reasons: dict[str, str]) -> dict[str, Any]:
    """Mean NVML utilisation per rank over its window, and their mean; null with the first reason where unsampled."""
    per_rank = []
    for u in (o.window.gpu_util for o in outputs):
        if u is None or not u.samples_percent:
            reasons["gpu_util_percent_mean"] = reasons["gpu_util_percent_per_rank"] = (u.reason if u else None) or "not sampled"
            return {}
        per_rank.append(float(np.mean(u.samples_percent)))
    return {"gpu_util_percent_mean": float(np.mean(per_rank)), "gpu_util_percent_per_rank": per_rank}


def _accuracy_columns(cfg: TrialConfig, outputs: list[RankResult]) -> dict[str, Any]:
    # Rank 0's, or under a pipeline the rank that holds the loss (the last stage).
    acc = next((o.accuracy for o in outputs if o.accuracy.eval_loss is not None), outputs[0].accuracy)
    out: dict[str, Any] = {k: getattr(acc, k) for k in _ACCURACY_COLUMNS}
    out["accuracy_protocol"] = json.dumps(acc.protocol, sort_keys=True) if acc.protocol is not None else None
    if acc.eval_loss is not None and acc.bayes_loss is not None:
        out["loss_gap_to_floor"] = acc.eval_loss - acc.bayes_loss
    curves = [o.train_losses for o in outputs if o.train_losses]  # pipeline: the last stage's only
    if curves:
        measured = np.array(curves, dtype=np.float64).mean(axis=0).tolist()
        out["final_train_loss"] = measured[-1]
        out["loss_curve"] = _sample(measured, cfg.loss_curve_points)
    return out


def comm_rows(run_id: str, cfg: TrialConfig, outputs: list[RankResult]) -> list[dict[str, Any]]:
    """The per-op breakdown table: one row per (rank, op, dtype, group size)."""
    rows = []
    for o in outputs:
        summary = o.window.comm_summary
        if summary is None:
            continue
        timings = o.profile.per_op if o.profile else {}
        for op in summary["ops"]:
            per_call = timings.get(op["op"], {}).get("time_s_per_call")
            bytes_per_call = op["msg_bytes"] / op["calls"] if op["calls"] else 0.0
            algbw = bytes_per_call / per_call if per_call else None
            busbw_known = algbw and op["op"] in BUS_FACTOR and op["group_size"] is not None
            backend_ops = {r["backend_op"] for r in o.window.comm_records if r["op"] == op["op"] and r["dtype"] == op["dtype"]}
            rows.append(
                {
                    "run_id": run_id,
                    "trial_id": cfg.trial_id,
                    "rank": o.rank,
                    "op": op["op"],
                    "backend_op": ",".join(sorted(backend_ops)),
                    "dtype": op["dtype"],
                    "group_size": op["group_size"],
                    "calls": int(op["calls"]),
                    "numel": int(op["numel"]),
                    "msg_bytes": int(op["msg_bytes"]),
                    "msg_bytes_per_step": float(op["msg_bytes_per_step"]),
                    "time_s_per_call": per_call,
                    "algbw_Bps": algbw,
                    "busbw_Bps": algbw * bus_factor(op["op"], op["group_size"]) if busbw_known else None,
                }
            )
    return rows

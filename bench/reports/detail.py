"""The detail tables: every trial's numbers in column groups that fit the page, bytes against the cost
model, and the per-collective breakdown."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from bench.reports import fmt
from bench.reports.blocks import Heading, Items, Paragraph, Section, Spec, Table, present, table
from bench.reports.cases import ReportData

# The columns that name a row in every table of this module.
IDENT = (
    Spec("strategy", "strategy", left=True, keep_empty=True),
    Spec("model", "model", left=True, keep_empty=True),
    Spec("variant", "case", title="config fields that differ between the rows of this model x workload", left=True),
    Spec("run_id", "run", left=True),
)
CI_TITLE = ("CI over launches of the median (order statistics: 95% from 6 launches, [min, max] below it at "
            "the level shown); none under 3 launches")
ALL = "all"  # marks a column as present in every group below

# Each workload's trials in these groups of columns, one table each, so that no table is wider than the page.
GROUPS: dict[str, tuple[Spec, ...]] = {
    "Latency and throughput": (
        Spec("status", "status", left=True, keep_empty=True),
        Spec("latency_p50_s", "p50 ms", fmt.ms, "median step time (a step's time is the max over ranks); over several launches, the median of their p50s"),
        Spec("latency_p90_s", "p90 ms", fmt.ms),
        Spec("latency_p99_s", "p99 ms", fmt.ms),
        Spec("latency_p50_s_ratio", "p50 vs base", fmt.ratio, "same case, same run"),
        Spec("tokens_shown", "tokens/s", fmt.count, "all ranks' tokens per step / median step time"),
        Spec("gen_tokens_per_s", "generate tok/s", fmt.count),
        Spec("timing_note", "timing", title="oversubscribed: ranks x threads per rank exceed the cores", left=True),
    ),
    "CIs over launches": (
        Spec("launches_shown", "launches", title="launches of the trial's ranks; `auto`: whether the CI reached its target", left=True),
        Spec("latency_p50_s_ci", "p50 CI ms", title=CI_TITLE, left=True, keep_empty=True),
        Spec("tokens_per_s_ci", "tokens/s CI", title=CI_TITLE, left=True),
        Spec("algbw_Bps_ci", "algbw CI MB/s", title=CI_TITLE, left=True),
        Spec("busbw_Bps_ci", "busbw CI MB/s", title=CI_TITLE, left=True),
    ),
    "Memory": (
        Spec("mem_rss_peak_bytes_max", "peak RSS MB (max rank)", fmt.mb, "kernel VmHWM over the measured window"),
        Spec("mem_rss_peak_bytes_max_ratio", "vs base", fmt.ratio),
        Spec("mem_rss_peak_bytes_sum", "peak RSS MB (all ranks)", fmt.mb),
        Spec("mem_cuda_max_allocated_bytes_max", "CUDA allocated MB", fmt.mb),
        Spec("mem_cuda_max_reserved_bytes_max", "CUDA reserved MB", fmt.mb),
        Spec("mem_nvml_process_bytes_max", "NVML process MB", fmt.mb),
        Spec("model_state_bytes_max", "model state MB (max rank)", fmt.mb, "params + grads + optimizer states held at the optimizer step"),
        Spec("model_state_peak_bytes_max", "model state peak MB", fmt.mb, "plus the unsharded params kept from forward to backward"),
    ),
    "Layout": (
        Spec("dp", "dp", fmt.count, "data-parallel degree"),
        Spec("tp", "tp", fmt.count, "tensor-parallel degree"),
        Spec("pp", "pp", fmt.count, "pipeline-parallel degree"),
        Spec("bubble_measured", "bubble (measured)", fmt.pct, "pipeline: each stage's idle share of its step, median"),
        Spec("bubble_analytic", "bubble (analytic)", fmt.pct, "(p-1)/(v m + p - 1)"),
    ),
    "Communication": (
        Spec("comm_logical_bytes_per_step", "logical MB/step (all ranks)", fmt.mb, "nccl-tests message size S, summed over ranks"),
        Spec("comm_logical_bytes_per_step_ratio", "vs base", fmt.ratio),
        Spec("wire_bytes_per_step", "wire MB/step", fmt.mb, "TCP payload bytes received by all ranks' backend sockets"),
        Spec("wire_bytes_per_step_ratio", "vs base", fmt.ratio),
        Spec("comm_calls_per_step", "calls/step", fmt.num),
        Spec("comm_time_s_per_step", "comm ms/step", fmt.ms, "profiler pass: time with a collective in flight"),
        Spec("comm_overlap_fraction", "hidden by compute", fmt.pct),
        Spec("algbw_Bps", "algbw MB/s", fmt.mb),
        Spec("busbw_Bps", "busbw MB/s", fmt.mb),
    ),
    "Accuracy": (
        Spec("final_train_loss", "final train loss", fmt.num),
        Spec("eval_loss", "eval loss", fmt.num, "nats, held-out batches"),
        Spec("eval_loss_delta", "Δ vs base", fmt.delta),
        Spec("loss_gap_to_floor", "gap to floor", fmt.num, "eval loss minus the Bayes-optimal loss"),
        Spec("perplexity", "perplexity", fmt.num),
        Spec("perplexity_delta", "Δ vs base", fmt.delta),
        Spec("kl_mean", "KL (nats)", fmt.num),
        Spec("top1_agreement", "top-1 agreement", fmt.num),
        Spec("embedding_cosine", "embedding cosine", fmt.num),
    ),
    "Model size": (
        Spec("model_params", "parameters", fmt.count),
        Spec("model_bytes", "model MB (dense)", fmt.mb),
        Spec("model_sparse_bytes", "model MB (sparse)", fmt.mb, "each tensor dense or bitmask + non-zeros, whichever is smaller"),
        Spec("sparsity", "sparsity", fmt.pct),
        Spec("transfer_payload_bytes", "payload MB", fmt.mb),
        Spec("serialized_bytes", "torch.save MB", fmt.mb),
    ),
}
RATIO_COLUMNS = ("latency_p50_s", "mem_rss_peak_bytes_max", "comm_logical_bytes_per_step", "wire_bytes_per_step")
DELTA_COLUMNS = ("eval_loss", "perplexity")


def prepared(data: ReportData) -> pd.DataFrame:
    """The latest rows with their variant label, ratios/differences to their baseline, and tokens/s shown only where tokens exist."""
    df = data.with_baseline(data.current, (*RATIO_COLUMNS, *DELTA_COLUMNS))
    for c in RATIO_COLUMNS:
        df[f"{c}_ratio"] = _ratio(df[c], df[f"{c}_base"])
    for c in DELTA_COLUMNS:
        df[f"{c}_delta"] = pd.to_numeric(df[c], errors="coerce") - pd.to_numeric(df[f"{c}_base"], errors="coerce")
    df["variant"] = [data.labels.get(i, "") for i in df.index]
    # A workload that processes no tokens (transfer, collectives) has no tokens/s; older rows stored 0.
    tokens = pd.to_numeric(df.get("tokens_per_step"), errors="coerce")
    df["tokens_shown"] = pd.to_numeric(df.get("tokens_per_s"), errors="coerce").where(tokens > 0)
    for col, show in (("latency_p50_s", fmt.ms), ("tokens_per_s", fmt.count), ("algbw_Bps", fmt.mb), ("busbw_Bps", fmt.mb)):
        df[f"{col}_ci"] = [ci_text(r, col, show) for _, r in df.iterrows()]
    df.loc[df["tokens_shown"].isna(), "tokens_per_s_ci"] = None
    df["launches_shown"] = [launches_text(r) for _, r in df.iterrows()]
    over = df["oversubscribed"] if "oversubscribed" in df else pd.Series(False, index=df.index)
    df["timing_note"] = ["oversubscribed" if v is True else "" for v in over]
    for key, col in (("pipeline_bubble_measured", "bubble_measured"), ("pipeline_bubble_analytic", "bubble_analytic")):
        df[col] = [_metric(m, key) for m in df.get("metrics", pd.Series(None, index=df.index))]
    return df


def ci_text(row: pd.Series, col: str, show: Any) -> str | None:
    """`[1.02, 1.09]` (with `(88%)` below a 95% level), `none (1 launch)`, or None where `col` is not measured."""
    if row.get("status") != "ok" or fmt.missing(row.get(col)):
        return None
    low, high = row.get(f"{col}_ci_low"), row.get(f"{col}_ci_high")
    if fmt.missing(low) or fmt.missing(high):
        n = row.get("launches")
        return f"none ({int(n)} launch{'es' if n != 1 else ''})" if not fmt.missing(n) else "none (launches not recorded)"
    level = row.get("ci_level")
    below = "" if fmt.missing(level) or level >= 0.95 else f" ({level * 100:.3g}%)"
    return fmt.ci(low, high, show) + below


def launches_text(row: pd.Series) -> str | None:
    """`5 (target met)`, `10 (max launches, target missed)`, `3` for a fixed count."""
    n = row.get("launches")
    if row.get("status") != "ok" or fmt.missing(n):
        return None
    stop, met = row.get("repeat_stop"), row.get("repeat_target_met")
    if row.get("repeats") != "auto":
        return f"{int(n)}"
    if stop == "target":
        return f"{int(n)} (target met)"
    return f"{int(n)} ({stop}, target missed)" if met is False else f"{int(n)} ({stop})"


def _metric(raw: Any, key: str) -> Any:
    try:
        return json.loads(raw).get(key) if isinstance(raw, str) else None
    except json.JSONDecodeError:
        return None


def _ratio(value: pd.Series, base: pd.Series) -> pd.Series:
    v, b = pd.to_numeric(value, errors="coerce"), pd.to_numeric(base, errors="coerce")
    return (v / b).where(b != 0)


def ident(rows: pd.DataFrame) -> tuple[Spec, ...]:
    """The naming columns for `rows`: the run only where they come from more than one."""
    return IDENT if rows["run_id"].nunique() > 1 else IDENT[:-1]


def trials_section(df: pd.DataFrame) -> Section:
    """Per workload, one table per column group (only the columns some row measured)."""
    blocks: list[Heading | Table | Paragraph] = []
    for workload, sub in df.sort_values(["workload", "model", "variant", "strategy"]).groupby("workload", sort=True):
        blocks.append(Heading(f"{workload}"))
        names = ident(sub)
        for title, specs in GROUPS.items():
            t = table(sub, (*names, *specs), caption=title, row_class="status", drop_zero=True)
            if t is not None and len(t.columns) > _ident_count(t, names):
                blocks.append(t)
    return Section("trials", "Every trial", tuple(blocks),
                   intro="The latest row of every trial, per workload, in groups of columns. Ratios and differences "
                         "are to the baseline row of the same case in the same run; – means not measured or not "
                         "applicable. A column that is 0 or – in every row of a workload is left out.")  # fmt: skip


def _ident_count(t: Table, ident: tuple[Spec, ...]) -> int:
    heads = {s.head for s in ident} | {"status"}
    return sum(c.head in heads for c in t.columns)


BYTES = (
    Spec("analytic_logical_bytes_per_step_per_rank", "analytic MB/step/rank", fmt.mb, "cost model: message bytes per rank per step"),
    Spec("logical_rank0", "logical MB/step (rank 0)", fmt.mb, "recorded message bytes of rank 0"),
    Spec("comm_logical_bytes_per_step", "logical MB/step (all ranks)", fmt.mb),
    Spec("modelled_wire_bytes_per_step", "modelled wire MB/step", fmt.mb, "cost model applied to the recorded collectives"),
    Spec("wire_bytes_per_step", "measured wire MB/step", fmt.mb),
    Spec("wire_ratio", "measured / modelled wire", fmt.ratio),
)
OPS = (
    Spec("op", "op (as run)", left=True, keep_empty=True),
    Spec("dtype", "dtype", left=True),
    Spec("calls_per_step", "calls/step", fmt.num),
    Spec("msg_bytes_per_step", "logical MB/step", fmt.mb),
    Spec("analytic_op_bytes", "analytic MB/step", fmt.mb, "cost model for this op, on the row that carried its bytes"),
    Spec("time_s_per_call", "ms/call", fmt.ms),
    Spec("algbw_Bps", "algbw MB/s", fmt.mb),
    Spec("busbw_Bps", "busbw MB/s", fmt.mb),
)


def moved_bytes(df: pd.DataFrame) -> pd.DataFrame:
    ok = df[df["status"] == "ok"]
    return ok[pd.to_numeric(ok["comm_logical_bytes_per_step"], errors="coerce").fillna(0) > 0]


def rank0_ops(data: ReportData, trials: pd.DataFrame) -> pd.DataFrame:
    comm = data.comm
    if comm.empty or trials.empty:
        return comm.iloc[:0]
    runs_trials = set(zip(trials["run_id"], trials["trial_id"]))
    keep = pd.Series([(r, t) in runs_trials for r, t in zip(comm["run_id"], comm["trial_id"])], index=comm.index, dtype=bool)
    return comm[keep & (comm["rank"] == 0)]


def bytes_section(df: pd.DataFrame, data: ReportData) -> Section | None:
    """Measured logical and wire bytes next to the cost model's, for every trial that moved bytes."""
    moved = moved_bytes(df)
    if moved.empty:
        return None
    ops = rank0_ops(data, moved)
    rank0 = ops.groupby(["run_id", "trial_id"])["msg_bytes_per_step"].sum()
    moved = moved.assign(logical_rank0=[rank0.get((r, t)) for r, t in zip(moved["run_id"], moved["trial_id"])])
    blocks = present(table(moved.sort_values(["model", "workload", "variant", "strategy"]), (*ident(moved), *BYTES)), *_gloo_notes(moved, ops))
    return Section("bytes", "Measured vs analytic bytes", blocks,
                   intro="Logical bytes follow nccl-tests' message size S; wire bytes are what the backend's sockets "
                         "received; the analytic and modelled columns come from bench/comm/cost_model.py.")  # fmt: skip


def collectives_section(df: pd.DataFrame, data: ReportData) -> Section | None:
    """Rank 0's collectives per op and dtype; the analytic bytes of an op appear once, on the row that carried them."""
    moved = moved_bytes(df)
    ops = rank0_ops(data, moved)
    if ops.empty:
        return None
    cols = ["run_id", "trial_id", "strategy", "model", "workload", "variant", "steps", "analytic_ops"]
    per_op = ops.merge(moved[cols], on=["run_id", "trial_id"])
    per_op["calls_per_step"] = per_op["calls"] / per_op["steps"]
    per_op["analytic_op_bytes"] = _analytic_once(per_op)
    per_op = per_op.sort_values(["model", "workload", "variant", "strategy", "op", "dtype"])
    return Section("collectives", "Per collective (rank 0)", present(table(per_op, (*ident(per_op), *OPS))),
                   intro="Each op and dtype rank 0 issued in the measured window, as the backend ran it.")  # fmt: skip


def _analytic_once(per_op: pd.DataFrame) -> list[Any]:
    """The cost model's bytes for (trial, op) on that op's row with the most bytes, and on no row that carried none."""
    out: list[Any] = [None] * len(per_op)
    positions = {idx: i for i, idx in enumerate(per_op.index)}
    for _, rows in per_op.groupby(["run_id", "trial_id", "op"], sort=False):
        top = rows["msg_bytes_per_step"].idxmax()
        analytic = _ops_json(rows.loc[top, "analytic_ops"]).get(str(rows.loc[top, "op"]))
        if rows.loc[top, "msg_bytes_per_step"] > 0:
            out[positions[top]] = analytic
    return out


def _ops_json(raw: Any) -> dict[str, float]:
    try:
        return json.loads(raw) if isinstance(raw, str) else {}
    except json.JSONDecodeError:
        return {}


def _gloo_notes(moved: pd.DataFrame, ops: pd.DataFrame) -> list[Paragraph | Items]:
    """Where gloo ran another op than the one asked for (e.g. reduce_scatter as an all_reduce), with the numbers."""
    from bench.comm.cost_model import GLOO_NOTES

    notes: dict[str, list[str]] = {}
    for _, r in moved[moved["backend"] == "gloo"].iterrows():
        ran = set(ops.loc[(ops["run_id"] == r["run_id"]) & (ops["trial_id"] == r["trial_id"]), "op"])
        for op in sorted(set(_ops_json(r.get("analytic_ops"))) - ran):
            if op in GLOO_NOTES:
                notes.setdefault(op, []).append(
                    f"{r['strategy']} | {r['model']} | {r['variant']}: logged as {', '.join(sorted(ran))}; wire "
                    f"{fmt.mb(r.get('wire_bytes_per_step'))} MB/step measured, {fmt.mb(r.get('modelled_wire_bytes_per_step'))} modelled for gloo"
                )
    blocks: list[Paragraph | Items] = []
    for op, trials in notes.items():
        blocks += [Paragraph(f"Where gloo differs from the textbook: {op}: {GLOO_NOTES[op]}."), Items(tuple(trials))]
    return blocks

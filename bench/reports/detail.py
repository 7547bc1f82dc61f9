"""The detail tables: every trial's numbers in column groups that fit the page, bytes against the cost
model, and the per-collective breakdown."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from bench.reports import fmt
from bench.reports.blocks import Heading, Items, Paragraph, Section, Spec, Table, present, table
from bench.reports.cases import ReportData
from bench.storage.schema import COMM_COLUMNS, TRIAL_COLUMNS, Column

_TRIAL = {c.name: c for c in TRIAL_COLUMNS}
_COMM = {c.name: c for c in COMM_COLUMNS}


def _spec(c: Column, title: str, head: str | None, left: bool, keep_empty: bool) -> Spec:
    return Spec(c.name, head or c.heading, getattr(fmt, c.fmt), title, left=left, keep_empty=keep_empty)


def column(name: str, title: str = "", *, head: str | None = None, left: bool = False, keep_empty: bool = False) -> Spec:
    """A result column as the schema labels and formats it (`head` where a table says it otherwise)."""
    return _spec(_TRIAL[name], title, head, left, keep_empty)


def comm_column(name: str, title: str = "", *, head: str | None = None, left: bool = False, keep_empty: bool = False) -> Spec:
    """A per-collective column as the schema labels and formats it."""
    return _spec(_COMM[name], title, head, left, keep_empty)

# The columns that name a row in every table of this module.
IDENT = (
    column("strategy", left=True, keep_empty=True),
    column("model", left=True, keep_empty=True),
    Spec("variant", "case", title="config fields that differ between the rows of this model x workload", left=True),
    column("run_id", left=True),
)
CI_TITLE = ("CI over launches of the median (order statistics: 95% from 6 launches, [min, max] below it at "
            "the level shown); none under 3 launches")
ALL = "all"  # marks a column as present in every group below

# Each workload's trials in these groups of columns, one table each, so that no table is wider than the page.
GROUPS: dict[str, tuple[Spec, ...]] = {
    "Latency and throughput": (
        column("status", left=True, keep_empty=True),
        column("latency_p50_s", "median step time (a step's time is the max over ranks); over several launches, the median of their p50s"),
        column("latency_p90_s"),
        column("latency_p99_s"),
        Spec("latency_p50_s_ratio", "p50 vs base", fmt.ratio, "same case, same run"),
        Spec("tokens_shown", "tokens/s", fmt.count, "all ranks' tokens per step / median step time"),
        column("gen_tokens_per_s"),
        Spec("timing_note", "timing", title="oversubscribed (ranks x threads per rank exceed the cores), or why the kernels are slow here", left=True),
    ),
    "CIs over launches": (
        Spec("launches_shown", "launches", title="launches of the trial's ranks; `auto`: whether the CI reached its target", left=True),
        Spec("latency_p50_s_ci", "p50 CI ms", title=CI_TITLE, left=True, keep_empty=True),
        Spec("tokens_per_s_ci", "tokens/s CI", title=CI_TITLE, left=True),
        Spec("algbw_Bps_ci", "algbw CI MB/s", title=CI_TITLE, left=True),
        Spec("busbw_Bps_ci", "busbw CI MB/s", title=CI_TITLE, left=True),
    ),
    "Memory": (
        column("mem_rss_peak_bytes_max", "kernel VmHWM over the measured window"),
        Spec("mem_rss_peak_bytes_max_ratio", "vs base", fmt.ratio),
        column("mem_rss_peak_bytes_sum"),
        column("mem_cuda_max_allocated_bytes_max"),
        column("mem_cuda_max_reserved_bytes_max"),
        column("mem_nvml_process_bytes_max"),
        column("model_state_bytes_max", "params + grads + optimizer states held at the optimizer step"),
        column("model_state_peak_bytes_max", "plus the unsharded params kept from forward to backward"),
    ),
    "Layout": (
        column("dp", "data-parallel degree"),
        column("tp", "tensor-parallel degree"),
        column("pp", "pipeline-parallel degree"),
        Spec("bubble_measured", "bubble (measured)", fmt.pct, "pipeline: each stage's idle share of its step, median"),
        Spec("bubble_analytic", "bubble (analytic)", fmt.pct, "(p-1)/(v m + p - 1)"),
    ),
    "Communication": (
        column("comm_logical_bytes_per_step", "nccl-tests message size S, summed over ranks"),
        Spec("comm_logical_bytes_per_step_ratio", "vs base", fmt.ratio),
        column("wire_bytes_per_step", "TCP payload bytes received by all ranks' backend sockets"),
        Spec("wire_bytes_per_step_ratio", "vs base", fmt.ratio),
        column("comm_calls_per_step"),
        column("comm_time_s_per_step", "profiler pass: time with a collective in flight"),
        column("comm_overlap_fraction"),
        column("algbw_Bps"),
        column("busbw_Bps"),
    ),
    "Accuracy": (
        column("final_train_loss"),
        column("eval_loss", "nats, held-out batches"),
        Spec("eval_loss_delta", "Δ vs base", fmt.delta),
        column("loss_gap_to_floor", "eval loss minus the Bayes-optimal loss"),
        column("perplexity"),
        Spec("perplexity_delta", "Δ vs base", fmt.delta),
        column("kl_mean"),
        column("top1_agreement"),
        column("embedding_cosine"),
    ),
    "Model size": (
        column("model_params"),
        column("model_bytes"),
        column("model_sparse_bytes", "each tensor dense or bitmask + non-zeros, whichever is smaller"),
        column("sparsity"),
        column("transfer_payload_bytes"),
        column("serialized_bytes"),
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
    kernel = df["kernel_note"] if "kernel_note" in df else pd.Series(None, index=df.index)
    df["timing_note"] = ["; ".join(n for n in ("oversubscribed" if o is True else "", k if isinstance(k, str) else "") if n)
                         for o, k in zip(over, kernel, strict=True)]  # fmt: skip
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
    column("analytic_logical_bytes_per_step_per_rank", "cost model: message bytes per rank per step"),
    Spec("logical_rank0", "logical MB/step (rank 0)", fmt.mb, "recorded message bytes of rank 0"),
    column("comm_logical_bytes_per_step"),
    column("modelled_wire_bytes_per_step", "cost model applied to the recorded collectives"),
    column("wire_bytes_per_step", head="measured wire MB/step"),
    column("wire_ratio"),
)
OPS = (
    comm_column("op", left=True, keep_empty=True),
    comm_column("dtype", left=True),
    Spec("calls_per_step", "calls/step", fmt.num),
    comm_column("msg_bytes_per_step"),
    Spec("analytic_op_bytes", "analytic MB/step", fmt.mb, "cost model for this op, on the row that carried its bytes"),
    comm_column("time_s_per_call"),
    comm_column("algbw_Bps"),
    comm_column("busbw_Bps"),
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

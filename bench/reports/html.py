"""Build a self-contained HTML report from result files: tables, ratios to baseline, figures."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from bench.reports import plots
from bench.storage.parquet import read_comm, read_results
from bench.system import now_utc

# Trials are comparable with their baseline when these match.
CASE_KEYS = ["model", "workload", "device", "world_size", "batch_size", "seq_len", "steps"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left}
.skipped{color:#777}.failed{color:#b00}.oversubscribed td{background:#fff3dc}
pre{background:#f7f7f7;padding:.5em;font-size:12px;white-space:pre-wrap}
img{max-width:100%}
"""


def with_baseline_ratios(df: pd.DataFrame) -> pd.DataFrame:
    """Add latency/bytes/loss ratios and gaps against the `baseline` row of the same case."""
    ok = df[df["status"] == "ok"]
    base = ok[ok["strategy"] == "baseline"].drop_duplicates(CASE_KEYS, keep="last")
    cols = ["latency_p50_s", "comm_logical_bytes_per_step", "wire_bytes_per_step", "eval_loss"]
    merged = df.merge(base[CASE_KEYS + cols], on=CASE_KEYS, how="left", suffixes=("", "_base"))
    merged["latency_ratio"] = merged["latency_p50_s"] / merged["latency_p50_s_base"]
    merged["bytes_ratio"] = merged["comm_logical_bytes_per_step"] / merged["comm_logical_bytes_per_step_base"]
    # Logical all_gather bytes count every rank's payload (nccl-tests' S), so a compressing
    # all_gather hook looks n/2 times costlier than it is next to an all_reduce; wire bytes don't.
    merged["wire_bytes_ratio"] = merged["wire_bytes_per_step"] / merged["wire_bytes_per_step_base"]
    merged["loss_gap_to_baseline"] = merged["eval_loss"] - merged["eval_loss_base"]
    return merged


def _fmt(value: object, kind: str) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    v = float(value)  # type: ignore[arg-type]
    if kind == "ms":
        return f"{v * 1e3:.2f}"
    if kind == "MB":
        return f"{v / 1e6:.3f}"
    if kind == "x":
        return f"{v:.3f}×"
    if kind == "f":
        return f"{v:.4f}"
    return f"{v:,.0f}"


TABLE = [
    ("strategy", "strategy", "s"),
    ("model", "model", "s"),
    ("world_size", "ws", "s"),
    ("status", "status", "s"),
    ("latency_p50_s", "p50 ms", "ms"),
    ("latency_p90_s", "p90 ms", "ms"),
    ("latency_p99_s", "p99 ms", "ms"),
    ("latency_ratio", "latency vs base", "x"),
    ("tokens_per_s", "tokens/s", "n"),
    ("gen_tokens_per_s", "gen tok/s", "n"),
    ("comm_logical_bytes_per_step", "logical MB/step (all ranks)", "MB"),
    ("bytes_ratio", "bytes vs base", "x"),
    ("wire_bytes_per_step", "wire MB/step", "MB"),
    ("wire_bytes_ratio", "wire vs base", "x"),
    ("wire_ratio", "wire/model", "x"),
    ("mem_rss_peak_bytes_max", "peak RSS MB (max rank)", "MB"),
    ("mem_cuda_max_allocated_bytes_max", "CUDA alloc MB", "MB"),
    ("eval_loss", "eval loss", "f"),
    ("loss_gap_to_floor", "gap to floor", "f"),
    ("loss_gap_to_baseline", "gap to base", "f"),
]


OVERSUBSCRIBED = "ranks × threads per rank exceed the cores: latency measures the OS scheduler too"


def _oversubscribed(r: pd.Series) -> bool:
    return bool(r.get("oversubscribed") is True)


def table_html(df: pd.DataFrame) -> str:
    head = "".join(f"<th class='{'l' if k == 's' else ''}'>{html.escape(h)}</th>" for _, h, k in TABLE)
    rows = []
    for _, r in df.sort_values(["model", "world_size", "strategy"]).iterrows():
        cells = []
        for col, _, kind in TABLE:
            v = r.get(col)
            text = html.escape(str(v)) if kind == "s" else _fmt(v, kind)
            if col == "world_size" and _oversubscribed(r):
                text += f" <span title='{OVERSUBSCRIBED}'>⚠</span>"
            cells.append(f"<td class='{'l' if kind == 's' else ''}'>{text}</td>")
        marks = " oversubscribed" if _oversubscribed(r) else ""
        rows.append(f"<tr class='{r['status']}{marks}'>{''.join(cells)}</tr>")
    note = f"<p>⚠ oversubscribed: {OVERSUBSCRIBED}.</p>" if any(_oversubscribed(r) for _, r in df.iterrows()) else ""
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>{note}"


BYTES_TABLE = [
    ("strategy", "strategy", "s"),
    ("model", "model", "s"),
    ("world_size", "ws", "s"),
    ("case", "case", "s"),
    ("analytic_logical_bytes_per_step_per_rank", "analytic MB/step/rank", "MB"),
    ("logical_rank0", "logical MB/step/rank (rank 0)", "MB"),
    ("comm_logical_bytes_per_step", "logical MB/step (all ranks)", "MB"),
    ("modelled_wire_bytes_per_step", "modelled wire MB/step", "MB"),
    ("wire_bytes_per_step", "measured wire MB/step", "MB"),
    ("wire_ratio", "wire/model", "x"),
    ("comm_time_s_per_step", "comm ms/step", "ms"),
    ("comm_overlap_fraction", "hidden by compute", "f"),
    ("algbw_Bps", "algbw MB/s", "MB"),
    ("busbw_Bps", "busbw MB/s", "MB"),
]
OPS_TABLE = [
    ("strategy", "strategy", "s"),
    ("model", "model", "s"),
    ("world_size", "ws", "s"),
    ("case", "case", "s"),
    ("op", "op (as run)", "s"),
    ("dtype", "dtype", "s"),
    ("calls_per_step", "calls/step", "f"),
    ("analytic_op_bytes", "analytic MB/step", "MB"),
    ("msg_bytes_per_step", "logical MB/step", "MB"),
    ("time_s_per_call", "ms/call", "ms"),
    ("algbw_Bps", "algbw MB/s", "MB"),
    ("busbw_Bps", "busbw MB/s", "MB"),
]


COMPRESSION_TABLE = [
    ("strategy", "strategy", "s"),
    ("model", "model", "s"),
    ("world_size", "ws", "s"),
    ("model_bytes", "model MB (dense)", "MB"),
    ("model_sparse_bytes", "model MB (sparse)", "MB"),
    ("sparsity", "sparsity", "f"),
    ("transfer_payload_bytes", "payload MB", "MB"),
    ("serialized_bytes", "torch.save MB", "MB"),
    ("perplexity", "perplexity", "f"),
    ("kl_mean", "KL mean (nats)", "f"),
    ("top1_agreement", "top-1 agreement", "f"),
    ("embedding_cosine", "embedding cosine", "f"),
]


def compression_html(ok: pd.DataFrame) -> str:
    """Model sizes and accuracy against the uncompressed model; for infer, accuracy-vs-size frontiers."""
    if ok.empty or ok["model_bytes"].isna().all():
        return ""
    cols = [c for c in COMPRESSION_TABLE if c[2] == "s" or ok[c[0]].notna().any()]
    parts = ["<h3>Model compression</h3>", _table(ok.sort_values(["model", "world_size", "strategy"]), cols)]
    x, xlabel = "model_sparse_bytes", "model MB (each tensor dense or bitmask-sparse, whichever is smaller)"
    figures = [
        (plots.pareto_scatter(ok, x, "perplexity", xlabel, "perplexity (lower is better)", 1e-6, log_y=True),
         "perplexity vs bytes"),
        (plots.pareto_scatter(ok.assign(embedding_gap=1 - ok["embedding_cosine"]), x, "embedding_gap", xlabel,
                              "1 - embedding cosine to the uncompressed model", 1e-6, log_y=True), "embedding gap vs bytes"),
    ]  # fmt: skip
    if any(uri for uri, _ in figures):
        parts.append("<h3>Accuracy vs model size</h3><p>Each strategy's accuracy against the bytes its model "
                     "takes; the red line joins the strategies nothing beats on both (fewer bytes, lower value).</p>")
        parts += [_img(uri, alt) for uri, alt in figures]
    return "\n".join(parts)


def _case(row: pd.Series) -> str:
    try:
        opts = json.loads(row["config"]).get("options", {})
    except (TypeError, ValueError):
        opts = {}
    return " ".join(f"{k}={v}" for k, v in sorted(opts.items()))


def _table(df: pd.DataFrame, spec: list[tuple[str, str, str]]) -> str:
    head = "".join(f"<th class='{'l' if k == 's' else ''}'>{html.escape(h)}</th>" for _, h, k in spec)
    rows = []
    for _, r in df.iterrows():
        cells = []
        for col, _, kind in spec:
            v = r.get(col)
            text = html.escape("" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)) if kind == "s" else _fmt(v, kind)
            cells.append(f"<td class='{'l' if kind == 's' else ''}'>{text}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def gloo_notes(ok: pd.DataFrame, ops: pd.DataFrame) -> dict[str, list[str]]:
    """Where the backend ran something else than what was asked for: op -> the trials, with numbers."""
    from bench.comm.cost_model import GLOO_NOTES

    notes: dict[str, list[str]] = {}
    for _, r in ok[ok["backend"] == "gloo"].iterrows():
        asked = set(json.loads(r["analytic_ops"]) if isinstance(r.get("analytic_ops"), str) else {})
        ran = set(ops.loc[(ops["trial_id"] == r["trial_id"]) & (ops["rank"] == 0), "op"])
        for op in sorted(asked - ran):
            if op in GLOO_NOTES:
                notes.setdefault(op, []).append(
                    f"{r['strategy']} | {r['model']} | ws={r['world_size']} {_case(r)}: logged as "
                    f"{', '.join(sorted(ran))}; wire {_fmt(r.get('wire_bytes_per_step'), 'MB')} MB/step measured, "
                    f"{_fmt(r.get('modelled_wire_bytes_per_step'), 'MB')} modelled for gloo"
                )
    return notes


def bytes_html(sub: pd.DataFrame, comm: pd.DataFrame) -> str:
    """Logical vs wire vs analytic bytes per trial, then per op with algbw/busbw."""
    ok = sub[(sub["status"] == "ok") & sub["comm_logical_bytes_per_step"].notna()].copy()
    if ok.empty or not (ok["comm_logical_bytes_per_step"] > 0).any():
        return ""
    ok["case"] = ok.apply(_case, axis=1)
    ok = ok.sort_values(["model", "world_size", "strategy", "case"])
    ops = comm[comm["trial_id"].isin(ok["trial_id"])] if not comm.empty else comm
    rank0 = ops[ops["rank"] == 0] if not ops.empty else ops
    ok["logical_rank0"] = ok["trial_id"].map(rank0.groupby("trial_id")["msg_bytes_per_step"].sum()) if not ops.empty else None
    parts = ["<h3>Bytes: logical vs wire vs analytic</h3>", _table(ok, BYTES_TABLE)]
    if not rank0.empty:
        per_op = rank0.merge(ok[["trial_id", "strategy", "model", "world_size", "case", "steps", "analytic_ops"]], on="trial_id")
        per_op["calls_per_step"] = per_op["calls"] / per_op["steps"]
        per_op["analytic_op_bytes"] = [
            json.loads(a).get(op) if isinstance(a, str) else None for a, op in zip(per_op["analytic_ops"], per_op["op"])
        ]
        parts += ["<h3>Per collective (rank 0)</h3>", _table(per_op.sort_values(["model", "world_size", "strategy", "case", "op"]), OPS_TABLE)]
    notes = gloo_notes(ok, ops) if not ops.empty else {}
    if notes:
        from bench.comm.cost_model import GLOO_NOTES

        parts.append("<h3>Where gloo differs from the textbook</h3>")
        for op, trials in notes.items():
            items = "".join(f"<li>{html.escape(t)}</li>" for t in trials)
            parts.append(f"<p><b>{html.escape(op)}</b>: {html.escape(GLOO_NOTES[op])}.</p><ul>{items}</ul>")
    return "\n".join(parts)


def problems_html(df: pd.DataFrame) -> str:
    bad = df[df["status"] != "ok"]
    if bad.empty:
        return ""
    items = []
    for _, r in bad.iterrows():
        label = f"{r['status']}: {r['strategy']} | {r['model']} | {r['workload']} | {r['device']} | ws={r['world_size']}"
        items.append(f"<details><summary class='{r['status']}'>{html.escape(label)}</summary><pre>{html.escape(str(r['error']))}</pre></details>")
    return "<h2>Skipped and failed trials</h2>" + "".join(items)


def _img(uri: str | None, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='{uri}'>" if uri else ""


def environment_html(df: pd.DataFrame) -> str:
    first = df.iloc[0]
    keys = ["git_sha", "git_dirty", "torch_version", "transformers_version", "python_version", "cpu_model", "cpu_cores", "gpu_name", "hostname"]
    rows = "".join(f"<tr><th class='l'>{k}</th><td class='l'>{html.escape(str(first.get(k)))}</td></tr>" for k in keys)
    runs = ", ".join(sorted(df["run_id"].unique()))
    return f"<table>{rows}<tr><th class='l'>runs</th><td class='l'>{html.escape(runs)}</td></tr></table>"


def build(df: pd.DataFrame, comm: pd.DataFrame, title: str) -> str:
    """The whole report as one HTML string with figures inlined."""
    if df.empty:
        body = "<p>No results.</p>"
    else:
        df = with_baseline_ratios(df)
        counts = df["status"].value_counts().to_dict()
        parts = [f"<p>{len(df)} trials: {html.escape(json.dumps(counts))}</p>", environment_html(df)]
        for workload, sub in df.groupby("workload", sort=True):
            ok = sub[sub["status"] == "ok"]
            parts.append(f"<h2>{html.escape(str(workload))}</h2>")
            parts.append(table_html(sub))
            parts.append(bytes_html(sub, comm))
            parts.append(_img(plots.grouped_bars(ok, "latency_p50_s", "p50 step latency (ms)", 1e3), "latency"))
            parts.append(_img(plots.grouped_bars(ok, "comm_logical_bytes_per_step", "logical MB per step (all ranks)", 1e-6), "bytes"))
            parts.append(compression_html(ok))
            if workload == "train":
                parts.append(_img(plots.loss_curves(ok), "loss curves"))
                parts.append("<h3>Accuracy vs bytes</h3><p>Held-out loss against the modelled wire bytes per "
                             "step (all ranks; logical bytes would count an all_gather's every payload and "
                             "overstate compressing hooks); the red line joins the strategies nothing beats on both.</p>")
                parts.append(_img(plots.pareto_scatter(ok, "modelled_wire_bytes_per_step", "eval_loss",
                                                       "modelled wire MB per step (all ranks)", "eval loss (nats)", 1e-6), "pareto"))
        parts.append(problems_html(df))
        body = "\n".join(parts)
    stamp = now_utc().strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1><p>generated {stamp}</p>{body}</body></html>"
    )


def write_report(paths: list[Path], out: Path, title: str | None = None) -> Path:
    df = read_results(paths)
    comm = read_comm(paths)
    suites = sorted(df["suite"].unique()) if not df.empty else []
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build(df, comm, title or f"commbench: {', '.join(suites) or 'empty'}"))
    return out

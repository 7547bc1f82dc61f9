"""The run summary (suites, commits, environment per run, counts by status) and the failed/skipped trials."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import pandas as pd

from bench.reports import fmt
from bench.reports.blocks import Cell, Column, Details, Heading, Paragraph, Section, Table, present
from bench.reports.cases import ReportData
from bench.runner.noise import describe_run
from bench.storage.schema import PHASE_COLUMNS

STATUS_ORDER = ("ok", "failed", "skipped")
# Environment columns a run records, as the summary names them.
ENVIRONMENT = {
    "torch_version": "torch",
    "transformers_version": "transformers",
    "python_version": "python",
    "cpu_model": "CPU",
    "cpu_cores": "cores",
    "gpu_name": "GPU",
    "gpu_driver": "GPU driver",
    "cuda_version": "CUDA",
    "hostname": "host",
}


def status_counts(statuses: Iterable[str]) -> str:
    """`11 ok, 1 failed`: every status present, in a fixed order, as words."""
    counts = Counter(str(s) for s in statuses)
    order = [*STATUS_ORDER, *sorted(set(counts) - set(STATUS_ORDER))]
    return ", ".join(f"{counts[s]} {s}" for s in order if counts[s])


def headline(data: ReportData) -> str:
    """One sentence: how many trials, in how many runs of which suites, and how they ended."""
    df = data.rows
    if df.empty:
        return "No results."
    suites = ", ".join(sorted(df["suite"].astype(str).unique()))
    runs = len(data.runs)
    shown = f"; the tables show the latest row of each of {len(data.current)} trials" if len(data.current) < len(df) else ""
    return f"{len(df)} trial rows in {runs} run{'s' if runs != 1 else ''} of {suites}: {status_counts(df['status'])}{shown}."


def section(data: ReportData) -> Section:
    df = data.rows
    env = _environment(df)
    common = [c for c in env.columns if env[c].nunique(dropna=False) <= 1]
    varying = [c for c in env.columns if c not in common]
    blocks = present(
        Paragraph(headline(data)),
        _runs_table(df, env, varying),
        Heading("Environment shared by every run") if common else None,
        _common_table(env, common) if common else None,
        Heading("Where the trials' time went") if _timed(data.current).any() else None,
        time_table(data.current),
    )
    return Section("summary", "Run summary", blocks)


def _timed(rows: pd.DataFrame) -> pd.Series:
    if "phase_spawn_s" not in rows or "trial_wall_s" not in rows:
        return pd.Series(False, index=rows.index)
    return rows["phase_spawn_s"].notna() & rows["trial_wall_s"].notna()


def time_table(rows: pd.DataFrame) -> Table | None:
    """Each phase of a trial (`phase_*_s`) summed over the trials that timed them, its share of
    their wall time and its median per trial; None when no row has phase timings."""
    timed = rows[_timed(rows)]
    if timed.empty:
        return None
    wall = float(timed["trial_wall_s"].sum())
    columns = (Column("phase", left=True), Column("total s"), Column("share of wall"), Column("median per trial s"))
    body = []
    for col in PHASE_COLUMNS:
        values = timed[col].dropna() if col in timed else pd.Series(dtype=float)
        total = float(values.sum())
        name = col.removeprefix("phase_").removesuffix("_s")
        body.append((Cell(name, left=True), Cell(fmt.num(total), sort=total), Cell(fmt.pct(total / wall), sort=total / wall),
                     Cell(fmt.num(float(values.median())) if len(values) else fmt.DASH)))  # fmt: skip
    measured = float(timed["latency_samples_s"].map(lambda v: float(sum(v)) if v is not None else 0.0).sum())
    failed = int((timed["status"] == "failed").sum()) if "status" in timed else 0
    trials = f"{len(timed)} trials ({failed} failed, timed up to the failure)" if failed else f"{len(timed)} trials"
    caption = (f"{trials}, {fmt.num(wall)} s of trial wall time, of which the measured steps took "
               f"{fmt.num(measured)} s ({fmt.pct(measured / wall)}); launch method(s): "
               f"{', '.join(sorted(timed['launch_method'].dropna().astype(str).unique())) or fmt.DASH}")  # fmt: skip
    return Table(columns, tuple(body), caption)


def _environment(df: pd.DataFrame) -> pd.DataFrame:
    """The environment columns as text, one row per result row; a GPU-less machine says so instead of `nan`."""
    env = pd.DataFrame(index=df.index)
    for column, name in ENVIRONMENT.items():
        env[name] = df[column].map(fmt.text) if column in df else fmt.DASH
    if "gpu_name" in df:
        no_gpu = df["gpu_name"].map(fmt.missing)
        env.loc[no_gpu, "GPU"] = "none"
    return env


def _commits(rows: pd.DataFrame) -> str:
    """Every commit a run's rows were measured at (a run normally has one), `+dirty` when uncommitted."""
    if "git_sha" not in rows:
        return fmt.DASH
    seen = []
    for sha, dirty in zip(rows["git_sha"], rows.get("git_dirty", pd.Series([None] * len(rows), index=rows.index))):
        label = fmt.sha(sha) + (" +dirty" if dirty is True or dirty == 1 else "")
        if label not in seen:
            seen.append(label)
    return ", ".join(seen)


def _runs_table(df: pd.DataFrame, env: pd.DataFrame, varying: list[str]) -> Table:
    columns = [Column("run", left=True), Column("suite", left=True), Column("started (UTC)", left=True),
               Column("commit", left=True), Column("trials", left=True)]  # fmt: skip
    columns += [Column(name, "differs between runs", left=True) for name in varying]
    columns.append(Column("noise", "the reference workload timed between launches, and the CPU other programs used", left=True))
    rows = []
    for run_id, rows_of_run in df.groupby("run_id", sort=True):
        started = pd.to_datetime(rows_of_run["started_at"], utc=True).min() if "started_at" in rows_of_run else None
        cells = [
            Cell(str(run_id), left=True),
            Cell(", ".join(sorted(rows_of_run["suite"].astype(str).unique())), left=True),
            Cell(fmt.DASH if fmt.missing(started) else started.strftime("%Y-%m-%d %H:%M"), left=True),
            Cell(_commits(rows_of_run), left=True),
            Cell(status_counts(rows_of_run["status"]), left=True),
        ]
        cells += [Cell(", ".join(dict.fromkeys(env.loc[rows_of_run.index, name])), left=True) for name in varying]
        line = describe_run(rows_of_run)[1]
        cells.append(Cell(line, left=True, cls="wrap" + (" worse" if line.startswith("NOISY") else "")))
        rows.append(tuple(cells))
    return Table(tuple(columns), tuple(rows))


def _common_table(env: pd.DataFrame, common: list[str]) -> Table:
    first = env.iloc[0]
    return Table((Column("", left=True), Column("", left=True)), tuple((Cell(n, left=True), Cell(first[n], left=True)) for n in common))


def problems(data: ReportData) -> Section | None:
    """Failed and skipped trials (latest row of each), with their reasons; None when the latest row of every trial is ok."""
    bad = data.current[data.current["status"] != "ok"] if not data.current.empty else data.current
    if bad.empty:
        return None
    bad = bad.sort_values(["status", "model", "workload", "strategy"])
    columns = (Column("status", left=True), Column("strategy", left=True), Column("model", left=True),
               Column("workload", left=True), Column("case", left=True), Column("reason", left=True))  # fmt: skip
    rows, details = [], []
    for idx, r in bad.iterrows():
        names = (r["status"], r["strategy"], r["model"], r["workload"], data.labels.get(idx, ""))
        reason = fmt.last_line(r.get("error"))
        if not fmt.missing(r.get("error_class")):  # rows from before the fault columns have none
            rank = "" if fmt.missing(r.get("failed_rank")) else f", rank {int(r['failed_rank'])}"
            phase = "" if fmt.missing(r.get("failed_phase")) else f", in {r['failed_phase']}"
            reason = f"[{r['error_class']}{rank}{phase}] {reason}"
        rows.append((*(Cell(fmt.text(v), left=True) for v in names), Cell(reason, left=True, cls="wrap")))
        if r["status"] == "failed" and not fmt.missing(r.get("error")):
            stderr = "" if fmt.missing(r.get("stderr_tail")) else f"\n\nstderr (tail):\n{r['stderr_tail']}"
            details.append(Details(" | ".join(fmt.text(v) for v in names[1:]), f"{r['error']}{stderr}", "failed"))
    table = Table(columns, tuple(rows), row_classes=tuple(str(s) for s in bad["status"]))
    return Section("problems", "Failed and skipped trials", (table, *details),
                   intro="Skipped: the strategy cannot run here, for the reason given. Failed: the root-cause rank's error; "
                         "its traceback tail below.")  # fmt: skip

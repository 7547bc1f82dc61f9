"""The predictor's adapter to stored results: parquet rows in, the pure modules' numbers out (pandas, no torch).

- `samples(rows)`: each ok `collectives`-workload row on a link as a calibration `Sample`
  (its median call time and its type; `send_recv` is a send of S).
- `observed(rows, comm)`: each ok `train` row on a link as an `Observed` step, its calls
  per step from the comm table (rank 0: calls and message bytes per op over the window),
  its hook's replayed codec (`codec_s_per_step`) and the communication its profiled steps hid
  behind compute (`comm_hidden_s_per_step`).
- `link_models(rows)`: alpha-beta per collective kind on each link, fitted from `samples`.
- `run_noise(rows)`: the machine's noise over each run whose rows the predictor uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.errors import BenchError
from bench.network.spec import tbf_burst_bytes
from bench.predict.calibrate import Sample, fit_by_op, segments_by_op
from bench.predict.holdout import Observed
from bench.predict.step import Call, LinkModel
from bench.runner.noise import describe_run
from bench.storage.parquet import launches_by_round, read_comm, read_results

CALIBRATION_WORKLOAD = "collectives"  # the rows alpha and beta are fitted on (suite calibration)
_CASE = ("model", "workload", "world_size", "nnodes", "batch_size", "seq_len", "steps")


def load(paths: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trial rows and comm rows under `paths`; BenchError when there are none."""
    rows = read_results(paths)
    if rows.empty:
        raise BenchError(f"no results under {', '.join(map(str, paths))}")
    return rows, read_comm(paths)


def _ok(rows: pd.DataFrame, workload: str) -> pd.DataFrame:
    if "network" not in rows:
        return rows.iloc[0:0]
    keep = (rows["status"] == "ok") & (rows["workload"] == workload) & rows["network"].notna() & rows["latency_p50_s"].notna()
    return rows[keep]


def samples(rows: pd.DataFrame) -> dict[str, list[Sample]]:
    """Link name -> the timed collectives measured on it."""
    out: dict[str, list[Sample]] = {}
    for _, r in _ok(rows, CALIBRATION_WORKLOAD).iterrows():
        m = json.loads(r["metrics"])
        op = "send" if m["op"] == "send_recv" else m["op"]
        out.setdefault(r["network"], []).append(
            Sample(op, int(r["world_size"]), float(m["size_bytes"]), float(r["latency_p50_s"]), m.get("dtype", "float32"))
        )
    return out


def rates(rows: pd.DataFrame) -> dict[str, float]:
    """Link name -> its tc rate (bit/s), for shaped links."""
    shaped = rows[rows.get("network_rate_bps", pd.Series(dtype=float)).notna()] if "network" in rows else rows.iloc[0:0]
    return {str(n): float(r) for n, r in zip(shaped["network"], shaped["network_rate_bps"])}


def link_models(rows: pd.DataFrame) -> dict[str, LinkModel]:
    """Link name -> alpha-beta per collective kind and per size segment, from the collectives rows
    measured on it (median over runs), with the tbf bucket of a shaped link."""
    out = {}
    shaped = rates(rows)
    for link, group in samples(rows).items():
        med = _median_samples(group)
        by_op = fit_by_op(med)
        if not by_op:
            continue
        default = by_op.get("all_reduce") or next(iter(by_op.values()))
        burst = float(tbf_burst_bytes(shaped[link])) if link in shaped else 0.0
        out[link] = LinkModel(link, default, by_op, f"collectives rows on {link}", segments_by_op(med), burst)
    return out


def _median_samples(group: list[Sample]) -> list[Sample]:
    """One sample per (op, ranks, size, type): the median over runs."""
    keyed: dict[tuple[str, int, float, str], list[float]] = {}
    for s in group:
        keyed.setdefault((s.op, s.n, s.msg_bytes, s.dtype), []).append(s.seconds)
    return [Sample(op, n, b, float(pd.Series(v).median()), t) for (op, n, b, t), v in sorted(keyed.items())]


def _calls(comm: pd.DataFrame, run_id: str, trial_id: str, steps: int) -> tuple[Call, ...]:
    mine = comm[(comm["run_id"] == run_id) & (comm["trial_id"] == trial_id) & (comm["rank"] == 0)]
    return tuple(Call(str(c["op"]), float(c["msg_bytes"]) / int(c["calls"]), int(c["calls"]) / steps, str(c.get("dtype", "float32")))
                 for _, c in mine.iterrows() if int(c["calls"]))  # fmt: skip


def observed(rows: pd.DataFrame, comm: pd.DataFrame) -> list[Observed]:
    """Every ok train step on a link, median over runs, with its calls per step."""
    ok = _ok(rows, "train")
    out: list[Observed] = []
    if ok.empty:  # a calibration-only results dir: agg over an empty frame is a frame, not a key
        return out
    for (case, strategy, link), g in ok.groupby([ok[list(_CASE)].astype(str).agg("|".join, axis=1), "strategy", "network"]):
        first = g.iloc[0]
        calls = _calls(comm, first["run_id"], first["trial_id"], int(first["steps"]))
        rate = first["network_rate_bps"]
        out.append(Observed(str(case), str(strategy), str(link), None if pd.isna(rate) else float(rate),
                            int(first["world_size"]), float(g["latency_p50_s"].median()), calls, _by_round(g),
                            tuple(sorted(set(g["run_id"].astype(str)))), _median(g, "codec_s_per_step"),
                            _median(g, "comm_hidden_s_per_step")))  # fmt: skip
    return out


def _median(g: pd.DataFrame, col: str) -> float | None:
    """The median of `g`'s rows' `col` (the replayed codec, the profiled hidden communication); None where
    none has one (or the rows predate the column)."""
    got = g[col].dropna() if col in g else ()
    return float(pd.Series(got).median()) if len(got) else None


def _by_round(g: pd.DataFrame) -> tuple[tuple[str, int, float], ...]:
    """(run, round, p50) of every launch of `g`'s rows that ran in rounds."""
    return tuple((str(r["run_id"]), rnd, p50) for _, r in g.iterrows() for rnd, p50 in launches_by_round(r).items())


@dataclass(frozen=True, slots=True)
class RunNoise:
    """One run's suite and the noise the sweep measured over it (`bench.runner.noise`; noisy None: not measured)."""

    suite: str
    noisy: bool | None
    line: str


def run_noise(rows: pd.DataFrame) -> dict[str, RunNoise]:
    """Run id -> its noise, for every run holding calibration or train rows on a link."""
    used = pd.concat([_ok(rows, CALIBRATION_WORKLOAD), _ok(rows, "train")])
    return {str(run): RunNoise(str(g["suite"].iloc[0]) if "suite" in g else "suite not recorded", *describe_run(g))
            for run, g in used.groupby("run_id")}  # fmt: skip

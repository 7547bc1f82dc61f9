"""How far the compression suite's evaluation is from its FLOP floor.

    python -m bench.investigations.eval_floor RESULTS_DIR --gflops RATE [--model smollm2-135m]

The floor of one strategy's evaluation is `2 · parameters · tokens forwarded` at the fp32
GEMM rate this machine reaches (`make kernels` prints it: "fp32 Linear alone"), with the
tokens forwarded read off each row's `accuracy_protocol` (its windows over the tokens read).
The measured side is the row's `phase_eval_s`: the perplexity pass, the fidelity windows it
does not share, the comparison and the short generate pass. The ratio is how many floors
the evaluation took; a strategy whose kernels are slow on this machine says why in
`kernel_note`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.eval.accuracy import sliding_windows
from bench.storage.parquet import read_results


@dataclass(frozen=True, slots=True)
class Floor:
    strategy: str
    eval_s: float
    tokens_forwarded: int
    floor_s: float
    kernel_note: str | None

    @property
    def ratio(self) -> float:
        return self.eval_s / self.floor_s


def tokens_forwarded(protocol: dict) -> int:
    """Tokens the perplexity pass runs through the model: every window over the tokens read."""
    windows = sliding_windows(int(protocol["tokens_read"]), int(protocol["window"]), int(protocol["stride"]))
    return sum(end - begin for begin, end, _ in windows)


def floors(rows: pd.DataFrame, params: int, gflops: float) -> list[Floor]:
    """One `Floor` per ok infer row of a corpus-perplexity model in `rows`."""
    out = []
    for _, r in rows.iterrows():
        protocol = json.loads(r["accuracy_protocol"]) if isinstance(r.get("accuracy_protocol"), str) else {}
        if r["status"] != "ok" or r["workload"] != "infer" or "window" not in protocol or pd.isna(r.get("phase_eval_s")):
            continue
        tokens = tokens_forwarded(protocol)
        metrics = json.loads(r["metrics"]) if isinstance(r.get("metrics"), str) else {}
        out.append(Floor(r["strategy"], float(r["phase_eval_s"]), tokens, 2 * params * tokens / (gflops * 1e9),
                         metrics.get("kernel_note")))  # fmt: skip
    return out


def markdown(found: list[Floor], params: int, gflops: float) -> str:
    lines = [f"Floor: 2 x {params:,} parameters x tokens forwarded at {gflops:g} GFLOP/s.", "",
             "| strategy | tokens forwarded | eval s | floor s | eval / floor | why slow |", "|---|---|---|---|---|---|"]  # fmt: skip
    for f in sorted(found, key=lambda f: f.ratio):
        lines.append(f"| {f.strategy} | {f.tokens_forwarded:,} | {f.eval_s:.1f} | {f.floor_s:.1f} | {f.ratio:.2f} | {f.kernel_note or ''} |")
    return "\n".join(lines)


def model_params(name: str) -> int:
    """Parameters of a zoo or pretrained model, each tied tensor once (loads the model)."""
    from bench.models.pretrained import load_pretrained
    from bench.models.zoo import count_params

    model, _, _ = load_pretrained(name)
    return count_params(model)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.investigations.eval_floor", description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, help="a results directory of the compression suite")
    p.add_argument("--gflops", type=float, required=True, help="fp32 GEMM rate of this machine (make kernels)")
    p.add_argument("--model", default="smollm2-135m")
    args = p.parse_args(argv)
    rows = read_results([args.results])
    rows = rows[rows["model"] == args.model]
    params = model_params(args.model)
    print(markdown(floors(rows, params, args.gflops), params, args.gflops))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

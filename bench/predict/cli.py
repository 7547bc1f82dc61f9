"""`commbench predict` and `commbench advise`: the predictor's subcommands (registered by bench/cli.py)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from bench.errors import BenchError

_BYTES = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str) -> float:
    """`80GB` -> 8e10, `24GiB` -> 24 x 2^30; BenchError for anything else."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = (m[2] or "b").lower() if m else ""
    if not m or unit not in _BYTES or float(m[1]) <= 0:
        raise BenchError(f"memory {text!r}: expected a positive size such as 80GB or 24GiB (units: {', '.join(_BYTES)})")
    return float(m[1]) * _BYTES[unit]


def _holdout(items: list[str]) -> list[set[str]] | None:
    """`--holdout network=200mbit --holdout 50mbit,1gbit` -> one fold per flag; None: leave each link out."""
    if not items:
        return None
    folds = []
    for item in items:
        key, eq, value = item.partition("=")
        if eq and key != "network":
            raise BenchError(f"--holdout {item!r}: only network=LINK[,LINK] can be held out")
        folds.append({v for v in (value if eq else key).split(",") if v})
    return folds


def _cmd_predict(args: argparse.Namespace) -> int:
    from bench.predict.present import predict_text

    print(predict_text(args.results, _holdout(args.holdout)))
    return 0


def _cmd_advise(args: argparse.Namespace) -> int:
    from bench.predict.present import advise_table, cluster_from_args, html_fragment, shape_named

    shape = shape_named(args.model)
    cluster = cluster_from_args(args, parse_bytes(args.mem))
    text, advice, notes = advise_table(shape, args.model, cluster, args.results)
    print(text)
    if args.html:
        args.html.write_text(html_fragment(args.model, cluster, advice, notes))
        print(f"html: {args.html}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    pr = sub.add_parser("predict", help="predict held-out network trials from the calibration; measured vs predicted, MAPE")
    pr.add_argument("results", nargs="+", type=Path, help="results holding the calibration and network suites' rows")
    pr.add_argument("--holdout", action="append", default=[], metavar="network=LINK[,LINK]",
                    help="links to hold out (repeat for several folds); default: every leave-one-link-out fold")  # fmt: skip
    pr.set_defaults(func=_cmd_predict)

    ad = sub.add_parser("advise", help="rank layouts and techniques for a model on a cluster (predicted; launches nothing)")
    ad.add_argument("--model", required=True, help="a zoo model or a published shape (llama-7b, llama-13b, llama-70b)")
    ad.add_argument("--nodes", type=int, required=True)
    ad.add_argument("--gpus-per-node", type=int, default=1)
    ad.add_argument(
        "--link", required=True, help="inter-node link per GPU: a rate (100gbit) or 10gbe, 25gbe, 100gbe, ib-hdr, ib-ndr"
    )
    ad.add_argument("--latency", help="per-message latency of the link, e.g. 5us (default: the link's published figure)")
    ad.add_argument("--intra-link", default="nvlink4", help="link between GPUs of a node (default nvlink4)")
    ad.add_argument("--mem", required=True, help="memory per device, e.g. 80GB")
    ad.add_argument("--tflops", type=float, default=160.0, help="achieved TFLOP/s per GPU (default 160)")
    ad.add_argument("--tokens", type=int, default=4096, help="tokens per GPU per step (default 4096)")
    ad.add_argument(
        "--results", type=Path, nargs="*", default=[], help="results rows: measured accuracy cost and validated error"
    )
    ad.add_argument("--html", type=Path, help="also write the table as an HTML fragment for the report")
    ad.set_defaults(func=_cmd_advise)

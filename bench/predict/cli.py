"""`commbench predict` and `commbench advise`: the predictor's subcommands (registered by bench/cli.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import BenchError
from bench.predict.request import AdviseRequest

if TYPE_CHECKING:
    from bench.predict.present import Advised

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
    from bench.predict.holdout import COMPUTE_WAYS, OVERLAP_WAYS, Way  # numpy: only when predicting
    from bench.predict.present import predict_text

    for flag, value, known in (("--compute", args.compute, COMPUTE_WAYS), ("--overlap", args.overlap, OVERLAP_WAYS)):
        if value not in known:
            raise BenchError(f"{flag} {value!r}: unknown (known: {', '.join(known)})")
    print(predict_text(args.results, _holdout(args.holdout), Way(args.compute, args.overlap)))
    return 0


QUESTION = ("model", "nodes", "gpus_per_node", "link", "latency", "intra_link", "mem", "tflops", "tokens")  # AdviseRequest's flags


def request_of(args: argparse.Namespace) -> AdviseRequest:
    """The question from --config FILE or from the flags (not both)."""
    given = {k: getattr(args, k) for k in QUESTION if getattr(args, k) is not None}
    if args.config:
        if given:
            raise BenchError(f"advise: give --config or the cluster flags, not both (got --{next(iter(given)).replace('_', '-')})")
        return AdviseRequest.from_toml(args.config)
    return AdviseRequest.from_mapping(given, "advise")


WriteHtml = Callable[[list[Path], Path, "Advised"], None]  # the report writer (bench/cli.py passes it: reports sit above predict)


def _cmd_advise(args: argparse.Namespace, write_html: WriteHtml) -> int:
    from bench.predict.present import advice_text, advised

    answer = advised(request_of(args), args.results)
    print(advice_text(answer))
    if args.html:
        write_html(args.results, args.html, answer)
        print(f"report: {args.html} (the advice section{', with the report of the results' if args.results else ''})")
    return 0


def add_parsers(sub: argparse._SubParsersAction, write_html: WriteHtml) -> None:  # type: ignore[type-arg]
    pr = sub.add_parser("predict", help="predict held-out network trials from the calibration; measured vs predicted, MAPE")
    pr.add_argument("results", nargs="+", type=Path, help="results holding the calibration and network suites' rows")
    pr.add_argument("--holdout", action="append", default=[], metavar="network=LINK[,LINK]",
                    help="links to hold out (repeat for several folds); default: every leave-one-link-out fold")  # fmt: skip
    pr.add_argument("--compute", default="fitted", metavar="WAY",
                    help="each strategy's compute: fitted on its own trials (default), or replayed: the baseline's plus its hook's codec replayed apart from the link")  # fmt: skip
    pr.add_argument("--overlap", default="profiled", metavar="WAY",
                    help="profiled (default): less the communication each strategy's profiled calibration trials hid behind compute (comm_hidden_s_per_step; none where the rows have no profiler pass); none: every collective exposed")  # fmt: skip
    pr.set_defaults(func=_cmd_predict)

    ad = sub.add_parser("advise", help="rank layouts and techniques for a model on a cluster (predicted; launches nothing)")
    ad.add_argument("--config", type=Path, help="the question as a TOML file (keys: the flags below, with underscores)")
    ad.add_argument("--model", help="a zoo model or a published shape (llama-7b, llama-13b, llama-70b)")
    ad.add_argument("--nodes", type=int)
    ad.add_argument("--gpus-per-node", type=int, help="default 1")
    ad.add_argument("--link", help="inter-node link per GPU: a rate (100gbit) or 10gbe, 25gbe, 100gbe, ib-hdr, ib-ndr")
    ad.add_argument("--latency", help="per-message latency of the link, e.g. 5us (default: the link's published figure)")
    ad.add_argument("--intra-link", help="link between GPUs of a node (default nvlink4)")
    ad.add_argument("--mem", help="memory per device, e.g. 80GB")
    ad.add_argument("--tflops", type=float, help="achieved TFLOP/s per GPU (default 160)")
    ad.add_argument("--tokens", type=int, help="tokens per GPU per step (default 4096)")
    ad.add_argument(
        "--results", type=Path, nargs="*", default=[], help="results rows: measured accuracy cost and validated error"
    )
    ad.add_argument("--html", type=Path, help="also write an HTML report: the advice section, and the results' report if --results")
    ad.set_defaults(func=lambda args: _cmd_advise(args, write_html))

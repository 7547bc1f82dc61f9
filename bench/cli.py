"""Command line: `commbench list | run | sweep | report | compare | nightly | compare-revs | predict | advise` (also `python -m bench`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.distributed.forkserver import DEFAULT_START_METHOD, START_METHODS
from bench.errors import BenchError

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_RESULTS = Path("results")
DEFAULT_REPORTS = Path("reports")


def _cmd_list(args: argparse.Namespace) -> int:
    from bench.models.zoo import MODELS
    from bench.runner.suite import builtin_suites
    from bench.strategies import STRATEGIES
    from bench.workloads import WORKLOADS

    what = args.what
    if args.markdown:
        if what != "strategies":
            raise BenchError("--markdown goes with `list strategies` (the strategies table of docs/strategies.md)")
        from bench.strategies.catalog import markdown

        print(markdown())
        return 0
    if what in ("all", "strategies"):
        print("strategies:")
        aliases: dict[str, list[str]] = {}
        for alias, name in STRATEGIES.aliases().items():
            aliases.setdefault(name, []).append(alias)
        for name in STRATEGIES.names():
            cls = STRATEGIES.get(name)
            extra = f" (alias: {', '.join(aliases[name])})" if name in aliases else ""
            print(f"  {name:<22} {cls.summary}{extra}")
    if what in ("all", "models"):
        from bench.models.zoo import weights_source

        print("models:")
        for name in MODELS.names():
            spec = MODELS.get(name)
            print(f"  {name:<22} {spec.family:<6} {spec.size:<10} {spec.objective:<7} {spec.notes}")
            if spec.pretrained:  # what "uncompressed" means for this model, as its rows' weights_source says
                print(f"  {'':<22} weights: {weights_source(spec, seed=0)}")
    if what in ("all", "workloads"):
        print("workloads:")
        for name in WORKLOADS.names():
            w = WORKLOADS.get(name)
            print(f"  {name:<22} {w.summary}")
            opts = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(w.options_type))
            print(f"  {'':<22} options: {opts or '(none)'}")
    if what in ("all", "suites"):
        print("suites:")
        for path in builtin_suites():
            print(f"  {path.stem:<22} {path}")
    return 0


def _parse_sets(items: list[str]) -> dict[str, Any]:
    """`--set data.states=128 --set lr=0.01` -> nested dict.

    Values stay raw strings for the typed trial fields (the config coerces them); under
    `options.` a value is read as a TOML literal (so `options.size_bytes=1048576` is an int),
    else kept as a string, and the workload's options dataclass checks it.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise BenchError(f"--set {item!r}: expected key=value")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = _literal(value) if parents[:1] == ["options"] else value
    return out


def _literal(text: str) -> Any:
    """`1048576` -> 1048576, `true` -> True, `[1, 2]` -> [1, 2]; anything else stays a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _cmd_run(args: argparse.Namespace) -> int:
    from bench.runner.suite import Suite, Trial, check_composition, import_plugins, make_config, pre_launch_skip
    from bench.runner.sweep import run_sweep
    from bench.strategies import parse

    if args.config:
        try:
            raw = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BenchError(f"cannot read config {args.config}: {exc}") from None
        point = {k: raw.pop(k) for k in ("strategy", "model", "workload", "device", "world_size") if k in raw}
        raw.pop("suite", None)
        plugins = tuple(raw.pop("plugins", ()))
    else:
        point = {
            "strategy": args.strategy,
            "model": args.model,
            "workload": args.workload,
            "device": args.device,
            "world_size": args.world_size,
        }
        raw, plugins = {}, tuple(args.plugin)
    for key in ("steps", "warmup_steps", "batch_size", "seq_len", "timeout_s"):
        value = getattr(args, key)
        if value is not None:
            raw[key] = value
    raw.update(_parse_sets(args.set))
    import_plugins(plugins, "run")
    comp = parse(str(point["strategy"]))
    point["strategy"] = comp.canonical
    cfg = make_config(args.suite, point, raw, plugins, where="run")
    check_composition(comp, cfg, where="run")
    placement = _placement(args)
    if placement is not None:
        cfg = _on_nodes(cfg, placement, "run")
    suite = Suite(args.suite, "ad-hoc trial", Path("."), [Trial(cfg, comp, pre_launch_skip(cfg, comp))])
    return _finish(
        suite,
        run_sweep(suite, args.results, force=True, progress=False, launch_method=args.launch, placement=placement),
        args,
    )


def _placement(args: argparse.Namespace) -> Any:
    """The --nnodes/--node-rank/--rdzv-endpoint of a multi-node run, checked; None on one node."""
    from bench.distributed.launch import Placement

    if args.nnodes == 1:
        if args.node_rank or args.rdzv_endpoint:
            raise BenchError("--node-rank and --rdzv-endpoint go with --nnodes N (N > 1)")
        return None
    if args.nnodes < 1:
        raise BenchError(f"--nnodes must be >= 1, got {args.nnodes}")
    if not 0 <= args.node_rank < args.nnodes:
        raise BenchError(f"--node-rank must be in [0, {args.nnodes - 1}], got {args.node_rank}")
    host, colon, port = (args.rdzv_endpoint or "").rpartition(":")
    if not (host and colon and port.isdigit() and 0 < int(port) < 65536):
        raise BenchError(f"--rdzv-endpoint must be HOST:PORT (node 0's address, a free port), got {args.rdzv_endpoint!r}")
    return Placement(args.nnodes, args.node_rank, args.rdzv_endpoint)


def _on_nodes(cfg: Any, placement: Any, where: str) -> Any:
    """`cfg` spread over the placement's nodes: world_size stays the total number of ranks."""
    if cfg.network is not None:
        raise BenchError(f"{where}: network {cfg.network!r} emulates nodes on this machine; it cannot run with --nnodes")
    if cfg.world_size % placement.nnodes:
        raise BenchError(f"{where}: world_size {cfg.world_size} does not split over --nnodes {placement.nnodes}")
    return dataclasses.replace(cfg, nnodes=placement.nnodes)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from bench.runner import packing
    from bench.runner import suite as suites
    from bench.runner.executors import PackingExecutor
    from bench.runner.executors import make as make_executor
    from bench.runner.sweep import plan, print_plan, run_sweep

    suite = suites.load(args.suite)
    placement = _placement(args)
    if placement is not None:
        if args.executor != "local":
            raise BenchError("--nnodes runs this node's share of each trial here: it takes --executor local")
        trials = [dataclasses.replace(t, config=_on_nodes(t.config, placement, str(suite.path))) for t in suite.trials]
        suite = dataclasses.replace(suite, trials=trials)
    executor = make_executor(args.executor, args.executor_opt)  # bad options fail before anything runs
    if args.pack:
        if args.executor != "local" or placement is not None:
            raise BenchError("--pack runs trials side by side on this machine: it takes --executor local and no --nnodes")
        executor = PackingExecutor()
    if args.dry_run:
        entries = plan(suite, args.results / suite.name, args.force)
        print_plan(entries)
        if isinstance(executor, PackingExecutor):
            waves = executor.plan([t.config for t, action in entries if action.startswith("run")])
            print(executor.summary(waves))
            for i, wave in enumerate(waves, 1):
                if len(wave.slots) > 1:
                    print(f"wave {i}: " + ", ".join(f"{s.trial_id} on cores {packing.cpuset(s.cores)}" for s in wave.slots))
        return 0
    outcome = run_sweep(
        suite, args.results, force=args.force, progress=not args.no_progress, executor=executor,
        launch_method=args.launch, placement=placement,
    )  # fmt: skip
    return _finish(suite, outcome, args)


def _finish(suite: Any, outcome: Any, args: argparse.Namespace) -> int:
    from bench.reports.html import write_report

    counts = ", ".join(f"{n} {s}" for s, n in sorted(outcome.counts.items()))
    print(f"{suite.name}: {counts or 'nothing to run'}; {outcome.cached} already done")
    if outcome.results_path:
        print(f"results: {outcome.results_path}")
        if not getattr(args, "no_report", False):
            out = args.reports / suite.name / f"{outcome.run_id}.html"
            write_report([outcome.results_path], out)
            print(f"report:  {out}")
    return 1 if outcome.failed else 0


def _cmd_report(args: argparse.Namespace) -> int:
    from bench.compare.thresholds import parse_thresholds
    from bench.reports.html import write_report
    from bench.storage.parquet import trial_files

    thresholds = parse_thresholds(args.threshold)
    files = trial_files(args.results)
    if not files:
        raise BenchError(f"no results files under {', '.join(map(str, args.results))}")
    out = args.out or args.reports / "report.html"
    advised = None
    if args.advise:
        from bench.predict.present import advised as advise_on
        from bench.predict.request import AdviseRequest

        advised = advise_on(AdviseRequest.from_toml(args.advise), files)
    write_report(files, out, args.title, thresholds, alpha=args.alpha, advised=advised)
    print(f"report: {out}")
    return 0


def _write_advice(results: list[Path], out: Path, answer: Any) -> None:
    """`advise --html`: the advice section, after the report of `results` when given."""
    from bench.reports.html import write_report
    from bench.storage.parquet import trial_files

    write_report(trial_files(results) if results else [], out, advised=answer)


def _cmd_compare(args: argparse.Namespace) -> int:
    from bench.compare.history import History, history
    from bench.compare.regression import Comparison, compare
    from bench.compare.thresholds import parse_thresholds
    from bench.config import to_dict

    thresholds = parse_thresholds(args.threshold)
    result: Comparison | History
    if args.history:
        if args.paths:
            raise BenchError("compare: give BASE CANDIDATE or --history DIR..., not both")
        result = history(_read_nonempty(args.history), thresholds)
    else:
        if len(args.paths) != 2:
            raise BenchError(f"compare: expected BASE CANDIDATE (or --history DIR...), got {len(args.paths)} path(s)")
        base, cand = (_read_nonempty([p]) for p in args.paths)
        result = compare(base, cand, thresholds, alpha=args.alpha)
    print(result.summary())
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(to_dict(result), indent=1) + "\n")
    return 1 if result.has_regressions() else 0


def _cmd_nightly(args: argparse.Namespace) -> int:
    from bench.compare.thresholds import parse_thresholds
    from bench.regressions.nightly import run_nightly

    thresholds = parse_thresholds(args.threshold)
    verdict = run_nightly(args.suite, args.history, args.out, thresholds, alpha=args.alpha, accept=args.accept,
                          progress=not args.no_progress)  # fmt: skip
    print(verdict.summary())
    print(f"summary: {args.out / 'summary.json'}")
    return 0 if verdict.passed else 1


def _cmd_compare_revs(args: argparse.Namespace) -> int:
    from bench.compare.thresholds import parse_thresholds
    from bench.config import to_dict
    from bench.regressions.revs import compare_revs
    from bench.runner.suite import resolve_path

    thresholds = parse_thresholds(args.threshold)
    outcome = compare_revs(args.a, args.b, resolve_path(args.suite), args.results_dir, rounds=args.rounds,
                           thresholds=thresholds, alpha=args.alpha)  # fmt: skip
    print(f"A = {outcome.a.name} ({outcome.a.sha[:10]}), B = {outcome.b.name} ({outcome.b.sha[:10]}); "
          f"runs in order: {' '.join(label for label, _ in outcome.runs)}; results: {outcome.results}")  # fmt: skip
    print(outcome.comparison.summary())
    out = args.json_out or outcome.results / "compare.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(to_dict(outcome), indent=1, default=str) + "\n")
    print(f"json: {out}")
    return 1 if outcome.comparison.has_regressions() else 0


def _read_nonempty(paths: list[Path]) -> pd.DataFrame:
    """The trial rows under `paths`; no results file at all is an error, not an empty comparison."""
    from bench.storage.parquet import read_results, trial_files

    if not trial_files(paths):
        raise BenchError(f"no results files under {', '.join(map(str, paths))}")
    return read_results(paths)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="commbench", description="Benchmark communication optimizations for LLMs.")
    sub = p.add_subparsers(dest="command", required=True)

    ls = sub.add_parser("list", help="list strategies, models, workloads and suites")
    ls.add_argument("what", nargs="?", default="all", choices=["all", "strategies", "models", "workloads", "suites"])
    ls.add_argument("--markdown", action="store_true", help="with `strategies`: the table of docs/strategies.md, generated")
    ls.set_defaults(func=_cmd_list)

    run = sub.add_parser("run", help="run one trial from flags")
    run.add_argument("--strategy", default="baseline", help="composition, e.g. 'fp16_compress' (default: baseline)")
    run.add_argument("--model", default="gpt2-tiny")
    run.add_argument("--workload", default="train")
    run.add_argument("--device", default="cpu")
    run.add_argument("--world-size", type=int, default=2)
    run.add_argument("--steps", type=int)
    run.add_argument("--warmup-steps", type=int)
    run.add_argument("--batch-size", type=int)
    run.add_argument("--seq-len", type=int)
    run.add_argument("--timeout-s", type=float)
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any trial setting, e.g. data.states=128")
    run.add_argument("--plugin", action="append", default=[], help="module to import in every rank (custom strategies)")
    run.add_argument("--config", help="rerun a stored trial: a JSON file holding a row's `config`")
    run.add_argument("--suite", default="adhoc", help="results go to RESULTS/SUITE/ (default: adhoc)")
    run.add_argument("--no-report", action="store_true")
    run.set_defaults(func=_cmd_run)

    sw = sub.add_parser("sweep", help="run every trial of a suite file")
    sw.add_argument("suite", help="suite file, or the name of one in suites/")
    sw.add_argument("--dry-run", action="store_true", help="list the trials and which are already done")
    sw.add_argument("--force", action="store_true", help="rerun trials already recorded ok")
    sw.add_argument("--no-report", action="store_true")
    sw.add_argument("--no-progress", action="store_true")
    sw.add_argument("--executor", default="local", choices=["local", "slurm", "submitit-local"],
                    help="where trials run: here one by one (default), one Slurm job each via submitit, "
                         "or submitit's local executor (tests, trying a set-up)")  # fmt: skip
    sw.add_argument("--executor-opt", action="append", default=[], metavar="KEY=VALUE",
                    help="a submitit parameter, e.g. partition=gpu, time=60, gpus_per_node=8 (slurm); timeout_min=30 (submitit-local)")  # fmt: skip
    sw.add_argument("--pack", action="store_true",
                    help="run trials that fit side by side at once, on disjoint cores (and GPUs); off by default, "
                         "and sequential on a machine without cores to spare (e.g. 2)")  # fmt: skip
    sw.set_defaults(func=_cmd_sweep)
    for sp in (run, sw):
        sp.add_argument("--launch", choices=START_METHODS, default=DEFAULT_START_METHOD,
                        help=f"how ranks start: forkserver (forked from a preloaded server) or spawn (fresh interpreters); default {DEFAULT_START_METHOD}")  # fmt: skip

    rp = sub.add_parser("report", help="HTML report from results files or directories")
    rp.add_argument("results", nargs="+", type=Path)
    rp.add_argument("--out", type=Path)
    rp.add_argument("--title")
    rp.add_argument("--advise", type=Path, metavar="ADVISE.toml", help="add the advice section for this cluster (see commbench advise --config)")
    rp.set_defaults(func=_cmd_report)

    cp = sub.add_parser("compare", help="regressions of CANDIDATE against BASE, or persistent steps over --history")
    cp.add_argument("paths", nargs="*", type=Path, metavar="BASE CANDIDATE", help="results files or directories")
    cp.add_argument("--history", nargs="+", type=Path, metavar="DIR", help="find persistent steps over every run here")
    cp.add_argument("--json", dest="json_out", type=Path, metavar="OUT", help="also write every verdict as JSON")
    cp.set_defaults(func=_cmd_compare)

    nb = sub.add_parser("nightly", help="run a suite into a results history, compare with the last good run, report")
    nb.add_argument("suite", nargs="?", default="nightly", help="suite file or name (default: nightly)")
    nb.add_argument(
        "--history", type=Path, default=DEFAULT_RESULTS / "history", help="results history root (default: results/history)"
    )
    nb.add_argument(
        "--out", type=Path, default=DEFAULT_REPORTS / "nightly", help="report and summary.json (default: reports/nightly)"
    )
    nb.add_argument("--accept", action="store_true", help="record this run as good even with regressions (a deliberate change)")
    nb.add_argument("--no-progress", action="store_true")
    nb.set_defaults(func=_cmd_nightly)

    rv = sub.add_parser("compare-revs", help="benchmark two git revisions interleaved (A B A B ...) in one job, then compare")
    rv.add_argument("a", metavar="A", help="base revision (e.g. main)")
    rv.add_argument("b", metavar="B", help="candidate revision (e.g. HEAD)")
    rv.add_argument("--suite", default="nightly", help="suite file or name, read from this checkout (default: nightly)")
    rv.add_argument("--rounds", type=int, default=3, help="sweeps per revision, alternating (default 3)")
    rv.add_argument("--results", dest="results_dir", type=Path, default=DEFAULT_RESULTS / "revs", help="default: results/revs")
    rv.add_argument(
        "--json", dest="json_out", type=Path, metavar="OUT", help="where to write the comparison (default: in the results)"
    )
    rv.set_defaults(func=_cmd_compare_revs)

    from bench.predict.cli import add_parsers as add_predict_parsers

    add_predict_parsers(sub, _write_advice)  # predict, advise

    for sp in (rp, cp, nb, rv):  # verdicts everywhere use the comparator's statistics and thresholds
        sp.add_argument("--threshold", action="append", default=[], metavar="METRIC:PCT%",
                        help="e.g. latency_p50:5%%, mem:10%%, bytes:0%% (defaults 10%%, 10%%, 0%%)")  # fmt: skip
        sp.add_argument("--alpha", type=float, default=0.05, help="significance level of the Mann-Whitney U test (default 0.05)")

    for sp in (run, sw):  # torchrun's multi-node options, passed to torch's elastic launcher
        sp.add_argument("--nnodes", type=int, default=1, help="nodes of a multi-node run (one commbench per node; default 1)")
        sp.add_argument("--node-rank", type=int, default=0, help="this node's rank in [0, nnodes); node 0 hosts the rendezvous")
        sp.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help="c10d rendezvous: node 0's address and a free port")

    for sp in (run, sw, rp):
        sp.add_argument(
            "--results", dest="results_dir", type=Path, default=DEFAULT_RESULTS, help="results root (default: results/)"
        )
        sp.add_argument("--reports", type=Path, default=DEFAULT_REPORTS, help="reports root (default: reports/)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "results_dir") and args.command != "report":
        args.results = args.results_dir
    try:
        return int(args.func(args))
    except BenchError as exc:
        print(f"commbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("commbench: interrupted; trials finished so far are saved", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

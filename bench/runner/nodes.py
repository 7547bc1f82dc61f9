"""Trials across nodes: one launcher per node, here as network namespaces joined by a veth (2) or a bridge (3+).

`launch_in_namespaces(cfg)` makes the namespace pair of `cfg.network`
(`bench.network.netns`), then starts one node process per namespace
(`ip netns exec <ns> python -m bench.runner.nodes ...`). Each runs torch's elastic launcher
for its `world_size // nnodes` ranks with a c10d rendezvous on node 0's veth address, so
gloo and the rendezvous talk only over the veth (GLOO_SOCKET_IFNAME names it). The node
holding global rank 0 writes every rank's result to its output file; the parent reads it
back as one `LaunchResult` and aggregates a row as for one node. Both node processes are
killed if the trial outlives its timeout, and the namespaces are deleted afterwards.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.comm.link import LINK_IFACE_ENV
from bench.contracts import PhaseTimes, TrialConfig
from bench.distributed.launch import LaunchResult, launch
from bench.network import netns
from bench.network.spec import parse_network
from bench.runner.worker import rank_main
from bench.system import boottime

RDZV_PORT = 29500  # free by construction: the namespace is new
_GRACE_S = 15.0  # how long a node may outlive its peer's failure before it is killed


def _node_command(link: netns.Link, node: int, cfg: TrialConfig, run_id: str, log_dir: Path) -> list[str]:
    return [
        *link.exec_prefix(node), sys.executable, "-m", "bench.runner.nodes",
        "--payload", str(log_dir / "payload.json"), "--out", str(log_dir / f"node{node}.json"),
        "--nnodes", str(cfg.nnodes), "--node-rank", str(node), "--nproc", str(cfg.world_size // cfg.nnodes),
        "--rdzv-endpoint", f"{link.addresses[0]}:{RDZV_PORT}", "--run-id", run_id,
        "--log-dir", str(log_dir / f"node{node}"), "--local-addr", link.addresses[node], "--timeout-s", str(cfg.timeout_s),
    ]  # fmt: skip


def launch_in_namespaces(cfg: TrialConfig, log_dir: Path) -> LaunchResult:
    """Run `cfg` with one node per namespace; raises `netns.NetnsUnavailable` where namespaces cannot be made."""
    if not 2 <= cfg.nnodes <= netns.MAX_NODES:
        raise ValueError(f"network trials run on 2 to {netns.MAX_NODES} namespace nodes, got nnodes = {cfg.nnodes}")
    spec = parse_network(cfg.network or "")
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "payload.json").write_text(json.dumps(cfg.to_dict()))
    run_id = uuid.uuid4().hex[:12]
    t0, started_s = time.perf_counter(), boottime()
    procs: list[subprocess.Popen[bytes]] = []
    with _terminate_as_exit(), netns.nodes(spec, cfg.nnodes) as link:
        try:
            for node in range(cfg.nnodes):
                env = {**os.environ, LINK_IFACE_ENV: link.interfaces[node], "GLOO_SOCKET_IFNAME": link.interfaces[node]}
                with open(log_dir / f"node{node}.log", "w") as log:
                    procs.append(subprocess.Popen(_node_command(link, node, cfg, run_id, log_dir), env=env, stdout=log,
                                                  stderr=subprocess.STDOUT, start_new_session=True))  # fmt: skip
            timed_out = _wait(procs, deadline=t0 + cfg.timeout_s + 30)
        finally:
            _kill(procs)  # interrupted: the nodes live in their own sessions, and must not outlive the namespaces
    merged = _merge(log_dir, procs, timed_out, time.perf_counter() - t0, cfg.timeout_s)
    # On the ranks' phase clock, so `spawn` includes the namespaces and the node processes.
    merged.started_s, merged.ended_s = started_s, boottime()
    return merged


@contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit while a namespace trial runs, so that its cleanup runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _wait(procs: list[subprocess.Popen[bytes]], deadline: float) -> bool:
    """Wait for every node; kill the rest when one fails (after a grace) or at the deadline. True: timed out."""
    failed_at: float | None = None
    while any(p.poll() is None for p in procs):
        now = time.perf_counter()
        if failed_at is None and any(p.returncode not in (None, 0) for p in procs):
            failed_at = now
        if now > deadline or (failed_at is not None and now > failed_at + _GRACE_S):
            _kill(procs)
            return now > deadline
        time.sleep(0.2)
    return False


def _kill(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # the node process's own session: its agent and ranks
            except ProcessLookupError:
                pass
            p.wait(timeout=30)


def _merge(log_dir: Path, procs: list[subprocess.Popen[bytes]], timed_out: bool, wall_s: float, timeout_s: float) -> LaunchResult:
    """One LaunchResult from the nodes' files: the outputs of the node holding rank 0, the first error."""
    merged = LaunchResult(log_dir=str(log_dir), wall_s=wall_s, holds_rank0=False)
    for node, proc in enumerate(procs):
        path = log_dir / f"node{node}.json"
        if not path.exists():
            if merged.error is None:
                tail = (log_dir / f"node{node}.log").read_text(errors="replace").strip().splitlines()[-15:]
                merged.error = f"node {node} wrote no result (exit code {proc.returncode}):\n" + "\n".join(tail)
            continue
        got = json.loads(path.read_text())
        merged.launcher_cpu_s += got["launcher_cpu_s"]
        for r, t in got["timelines"].items():
            merged.timelines[int(r)] = PhaseTimes(process_start_s=t["process_start_s"], marks=[(n, w) for n, w in t["marks"]])
        if got["error"] is not None and merged.error is None:
            merged.error, merged.failed_rank, merged.timed_out = got["error"], got["failed_rank"], got["timed_out"]
        if got["holds_rank0"]:
            merged.holds_rank0 = True
            merged.outputs = {int(r): v for r, v in got["outputs"].items()}
    if timed_out:
        merged.timed_out = True
        merged.error = f"trial exceeded its timeout of {timeout_s:.0f} s; both nodes were killed"
    elif merged.error is None and not merged.holds_rank0:
        merged.error = "no node returned global rank 0's gathered results"
    return merged


def main(argv: list[str] | None = None) -> int:
    """One node of a namespace trial: launch its ranks, write the LaunchResult as JSON."""
    p = argparse.ArgumentParser(prog="python -m bench.runner.nodes")
    for name in ("--payload", "--out", "--rdzv-endpoint", "--run-id", "--log-dir", "--local-addr"):
        p.add_argument(name, required=True)
    for name in ("--nnodes", "--node-rank", "--nproc"):
        p.add_argument(name, type=int, required=True)
    p.add_argument("--timeout-s", type=float, required=True)
    args = p.parse_args(argv)
    payload: dict[str, Any] = json.loads(Path(args.payload).read_text())
    result = launch(rank_main, payload, nprocs=args.nproc, log_dir=Path(args.log_dir), timeout_s=args.timeout_s,
                    nnodes=args.nnodes, node_rank=args.node_rank, rdzv_endpoint=args.rdzv_endpoint, run_id=args.run_id,
                    local_addr=args.local_addr)  # fmt: skip
    tmp = Path(args.out + ".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(result), default=str))
    tmp.replace(args.out)
    return 0 if result.error is None else 1


if __name__ == "__main__":
    raise SystemExit(main())

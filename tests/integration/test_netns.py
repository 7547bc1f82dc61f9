"""Several nodes: two network namespaces joined by a veth (shaped by tc, counted by the kernel), and the CLI's --nnodes.

The namespace tests skip cleanly where namespaces cannot be made (not root, no iproute2, a
container without CAP_NET_ADMIN). Every namespace they make is gone afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench.contracts import TrialConfig
from bench.network import netns
from bench.network.spec import NetworkSpec, parse_network
from bench.runner.trial import run_trial
from bench.storage.schema import PHASE_COLUMNS

pytestmark = pytest.mark.multirank

PAYLOAD = 4_000_000
SERVER = """
import socket, sys, time
s = socket.socket(); s.bind((sys.argv[1], 5000)); s.listen(); print("ready", flush=True)
c, _ = s.accept(); n = 0; t0 = None
while (b := c.recv(1 << 20)):
    t0 = t0 or time.perf_counter(); n += len(b)
print(n, time.perf_counter() - t0, flush=True)
"""
CLIENT = "import socket, sys; s = socket.create_connection((sys.argv[1], 5000)); s.sendall(b'x' * int(sys.argv[2])); s.close()"


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.fixture
def usable() -> None:
    reason = netns.unavailable_reason(parse_network("100mbit"))
    if reason:
        pytest.skip(reason)
    try:
        with netns.pair(parse_network("veth")):
            pass
    except netns.NetnsUnavailable as exc:
        pytest.skip(str(exc))


def counters(link: netns.Link) -> tuple[int, int]:
    """rx bytes and packets of both veth ends, summed (read inside each namespace)."""
    total = [0, 0]
    for node in range(2):
        code = f"import json; from bench.comm.link import read_counters; print(json.dumps(read_counters({link.interfaces[node]!r})))"
        got = json.loads(subprocess.run([*link.exec_prefix(node), sys.executable, "-c", code], capture_output=True,
                                        text=True, check=True).stdout)  # fmt: skip
        total[0] += got["rx_bytes"]
        total[1] += got["rx_packets"]
    return total[0], total[1]


@pytest.mark.netns
def test_veth_counts_tcp_payload_exactly_and_tc_shapes_it(usable: None) -> None:
    with netns.pair(parse_network("100mbit")) as link:
        server = subprocess.Popen([*link.exec_prefix(0), sys.executable, "-c", SERVER, link.addresses[0]],
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        rx0 = counters(link)
        subprocess.run([*link.exec_prefix(1), sys.executable, "-c", CLIENT, link.addresses[0], str(PAYLOAD)], check=True)
        got, seconds = server.stdout.readline().split()
        server.wait(timeout=30)
        rx1 = counters(link)
        assert int(got) == PAYLOAD
        rx_bytes, packets = rx1[0] - rx0[0], rx1[1] - rx0[1]
        # Every segment carries 66 header bytes, but for a few of the handshake and teardown
        # (measured: 32 bytes under 66 per segment over the whole connection, on 4 MB or 50 MB).
        assert abs(rx_bytes - netns.TCP_HEADER_BYTES * packets - PAYLOAD) <= 128
        # 4 MB at 100 Mbit/s is 0.32 s of wire time: the tbf on the veth holds it back.
        assert float(seconds) > 0.9 * PAYLOAD * 8 / 1e8
        assert set(link.namespaces) <= namespaces()
    assert not set(link.namespaces) & namespaces()  # gone (other runs' namespaces may come and go meanwhile)


@pytest.mark.netns
def test_ddp_across_two_namespaces_counts_its_wire_bytes_three_ways(
    usable: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []
    real_pair = netns.pair

    @contextmanager
    def recorded(spec: NetworkSpec) -> Iterator[netns.Link]:
        with real_pair(spec) as link:
            made.extend(link.namespaces)
            yield link

    monkeypatch.setattr(netns, "pair", recorded)
    cfg = TrialConfig(suite="t", strategy="baseline", model="gpt2-tiny", workload="train", world_size=2, nnodes=2,
                      network="veth", steps=3, warmup_steps=1, profile_steps=0, eval_batches=1, batch_size=2,
                      seq_len=32, timeout_s=300)  # fmt: skip
    row, comm = run_trial(cfg, "run", [], tmp_path)
    assert row is not None and row["status"] == "ok", row and row.get("error")
    assert (row["nnodes"], row["network"], row["world_size"]) == (2, "veth", 2)
    assert comm and {c["rank"] for c in comm} == {0, 1}  # both nodes' ranks came back through rank 0
    # Wire bytes three ways: the veth's counters (headers off), TCP_INFO of gloo's sockets, and the
    # cost model of DDP's all-reduce (2 ranks each receive the gradient's bytes once).
    link, sockets = row["link_payload_bytes_per_step"], row["wire_bytes_per_step"]
    analytic = row["world_size"] * row["analytic_logical_bytes_per_step_per_rank"]
    assert abs(link / analytic - 1) < 0.03 and abs(row["link_ratio"] - 1) < 0.03
    # link / sockets measured 1.0019-1.018 over 12 runs of this trial (findings/2026-11-30-network-breakeven.md): not within 1%.
    assert abs(sockets / analytic - 1) < 0.03 and abs(link / sockets - 1) < 0.03
    assert len(made) == 2 and not set(made) & namespaces()
    # Ranks and runner share one kernel's clock across namespaces: the phases add up.
    spent = [row[c] for c in PHASE_COLUMNS if row.get(c) is not None]
    assert len(spent) == len(PHASE_COLUMNS) - 1  # every phase but the unasked profile pass
    assert 0 < row["phase_spawn_s"] and sum(spent) == pytest.approx(row["trial_wall_s"], rel=0.05)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_on_two_nodes_writes_one_row_on_the_node_holding_rank_0(tmp_path: Path) -> None:
    """What `srun` runs on each node of a real cluster, here as two local `commbench run`s on loopback."""
    endpoint = f"127.0.0.1:{free_port()}"
    procs = [
        subprocess.Popen([sys.executable, "-m", "bench", "run", "--world-size", "2", "--steps", "2", "--warmup-steps", "1",
                          "--batch-size", "2", "--seq-len", "32", "--set", "profile_steps=0", "--set", "eval_batches=1",
                          "--nnodes", "2", "--node-rank", str(k), "--rdzv-endpoint", endpoint,
                          "--results", str(tmp_path / f"node{k}"), "--no-report"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        for k in range(2)
    ]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    from bench.storage.parquet import read_results, trial_files

    written = [k for k in range(2) if trial_files([tmp_path / f"node{k}"])]
    assert len(written) == 1, outs  # exactly one node holds global rank 0 and writes the row
    other = 1 - written[0]
    assert "row written by the node holding rank 0" in outs[other]
    [row] = read_results([tmp_path / f"node{written[0]}"]).to_dict("records")
    assert row["status"] == "ok" and row["nnodes"] == 2 and row["world_size"] == 2
    assert abs(row["wire_ratio"] - 1) < 0.03 and len(row["wire_bytes_per_step_per_rank"]) == 2  # both ranks' results

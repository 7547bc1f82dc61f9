"""Four nodes on one machine: network namespaces on a Linux bridge in a hub namespace, shaped by tc.

Skips cleanly where namespaces cannot be made. Every namespace it makes, the hub included, is gone afterwards.
"""

from __future__ import annotations

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
from tests.integration.test_netns import CLIENT, SERVER, namespaces

pytestmark = [pytest.mark.multirank, pytest.mark.netns]
PAYLOAD = 2_000_000


@pytest.fixture
def usable() -> None:
    reason = netns.unavailable_reason(parse_network("100mbit"))
    if reason:
        pytest.skip(reason)


def _send(link: netns.Link, src: int, dst: int) -> float:
    """Seconds the receiver took to read PAYLOAD bytes sent from node `src` to node `dst`."""
    server = subprocess.Popen([*link.exec_prefix(dst), sys.executable, "-c", SERVER, link.addresses[dst]],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    subprocess.run([*link.exec_prefix(src), sys.executable, "-c", CLIENT, link.addresses[dst], str(PAYLOAD)], check=True, timeout=60)
    got, seconds = server.stdout.readline().split()
    server.wait(timeout=30)
    assert int(got) == PAYLOAD
    return float(seconds)


def test_four_bridged_nodes_reach_each_other_through_a_shaped_port_and_are_removed(usable: None) -> None:
    with netns.nodes(parse_network("100mbit"), 4) as link:
        assert len(link.namespaces) == len(set(link.addresses)) == 4
        made = set(link.namespaces) | {link.namespaces[0].rsplit("-", 1)[0] + "-hub"}
        assert made <= namespaces()
        for src, dst in ((1, 0), (3, 2)):  # across the bridge, each held to the rate: 2 MB at 100 Mbit/s = 0.16 s
            assert _send(link, src, dst) > 0.9 * PAYLOAD * 8 / 1e8
    assert not made & namespaces()


def test_a_bridge_needs_three_nodes_or_more() -> None:
    with pytest.raises(ValueError, match="3 to"):
        with netns.bridged(parse_network("veth"), 1):
            pass


def test_ddp_on_four_bridged_nodes_moves_the_ring_bytes_of_four_ranks(usable: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One rank per node: each of 4 ranks receives 2(n-1)/n of the gradient's bytes, counted on the 4 veths."""
    made: list[str] = []
    real = netns.bridged

    @contextmanager
    def recorded(spec: NetworkSpec, n: int) -> Iterator[netns.Link]:
        with real(spec, n) as link:
            made.extend(link.namespaces)
            yield link

    monkeypatch.setattr(netns, "bridged", recorded)
    cfg = TrialConfig(suite="t", strategy="baseline", model="gpt2-tiny", workload="train", world_size=4, nnodes=4,
                      network="veth", steps=2, warmup_steps=1, profile_steps=0, eval_batches=1, batch_size=2,
                      seq_len=32, timeout_s=300)  # fmt: skip
    row, comm = run_trial(cfg, "run", [], tmp_path)
    assert row is not None and row["status"] == "ok", row and row.get("error")
    assert (row["nnodes"], row["world_size"]) == (4, 4) and {c["rank"] for c in comm} == {0, 1, 2, 3}
    assert abs(row["link_ratio"] - 1) < 0.03  # veth counters (headers off) against gloo's ring model at n = 4
    assert len(made) == 4 and not set(made) & namespaces()  # every namespace it made is gone

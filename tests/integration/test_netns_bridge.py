"""Four nodes on one machine: network namespaces on a Linux bridge in a hub namespace, shaped by tc.

Skips cleanly where namespaces cannot be made. Every namespace it makes, the hub included, is gone afterwards.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.network import netns
from bench.network.spec import parse_network
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

"""Two "hosts" on one machine: a pair of Linux network namespaces joined by a veth pair.

`pair(spec)` creates namespaces `cb-<id>-0` and `cb-<id>-1` (a fresh random id per call,
so concurrent runs never share one), a veth pair `cb<id>v0`/`cb<id>v1` with one end in
each, addresses 10.231.0.1/24 and 10.231.0.2/24, loopback up and IPv6 off (no router
solicitations or neighbour discovery in the counters). A shaped spec puts a `tbf` rate
limit on both ends' egress, or `netem` (rate and delay) where the spec has a delay. The
namespaces are deleted on leaving the context, and at interpreter exit if that is missed;
deleting a namespace deletes the veth end inside it, and nothing else is touched.

`bridged(spec, n)` makes n > 2 nodes: namespaces `cb-<id>-0..n-1` and a hub namespace
`cb-<id>-hub` holding a Linux bridge `cb<id>br`; node i's veth `cb<id>v<i>` pairs with the
bridge port `cb<id>p<i>` in the hub, at 10.231.0.(i+1)/24. A shaped spec limits each node's
egress and each bridge port's egress (the node's receive side) to the rate, as a switch with
one NIC per node would. The bridge lives in its own namespace: the host's is never touched.
`nodes(spec, n)` is `pair` for 2 nodes and `bridged` above.

Traffic between the namespaces exists only on the veth, so its counters
(`/sys/class/net/<if>/statistics`, read from inside the namespace) count it exactly.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from bench.network.spec import NetworkSpec

ADDRESSES = ("10.231.0.1", "10.231.0.2")
MAX_NODES = 16
PREFIX = 24
# Ethernet (14) + IPv4 (20) + TCP with the timestamp option (32): the header bytes of every
# TCP segment on the veth. Checked against a known payload in tests/integration/test_netns.py:
# a whole connection (handshake and teardown included) comes out 32 bytes off, on 4 MB or 50 MB.
TCP_HEADER_BYTES = 66
_TBF_LATENCY = "100ms"  # how long a packet may wait in the tbf queue before it is dropped
_live: set[str] = set()


class NetnsUnavailable(RuntimeError):
    """Namespaces, veth or the qdisc cannot be set up here; the message is the skip reason."""


@dataclass(frozen=True, slots=True)
class Link:
    """The namespace pair: node i runs in namespaces[i], behind interfaces[i] at addresses[i]."""

    namespaces: tuple[str, ...]
    interfaces: tuple[str, ...]
    addresses: tuple[str, ...]
    spec: NetworkSpec

    def exec_prefix(self, node: int) -> list[str]:
        """The command prefix that runs a program inside node `node`'s namespace."""
        return ["ip", "netns", "exec", self.namespaces[node]]


def unavailable_reason(spec: NetworkSpec) -> str | None:
    """Why namespaces cannot be made here, from cheap checks (creation may still fail)."""
    if not hasattr(os, "geteuid") or not os.path.isdir("/sys/class/net"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add); run as root or in a privileged container"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed (apt-get install iproute2)"
    if spec.shaped and shutil.which("tc") is None:
        return f"network {spec.name!r} needs iproute2's `tc`, which is not installed"
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise NetnsUnavailable(f"`ip {' '.join(args)}` failed: {done.stderr.strip() or done.returncode}")


def _tc(ns: str, *args: str) -> None:
    done = subprocess.run(["ip", "netns", "exec", ns, "tc", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise NetnsUnavailable(f"`tc {' '.join(args)}` in {ns} failed: {done.stderr.strip() or done.returncode}")


def qdisc_args(spec: NetworkSpec, dev: str) -> list[str]:
    """The `tc qdisc add` arguments that shape `dev`'s egress to `spec`."""
    assert spec.rate_bps is not None
    rate = f"{int(spec.rate_bps)}bit"
    if spec.delay_s is not None:
        # netem queues a rate's worth of packets; 10 s of them is never the limit here.
        return [
            "qdisc",
            "add",
            "dev",
            dev,
            "root",
            "netem",
            "delay",
            f"{spec.delay_s * 1e6:.0f}us",
            "rate",
            rate,
            "limit",
            "100000",
        ]
    return ["qdisc", "add", "dev", dev, "root", "tbf", "rate", rate, "burst", str(spec.burst_bytes), "latency", _TBF_LATENCY]


def _delete(ns: str) -> None:
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
    _live.discard(ns)


@atexit.register
def _cleanup() -> None:
    for ns in list(_live):
        _delete(ns)


def _bring_up(ns: str, dev: str, addr: str, spec: NetworkSpec) -> None:
    """A node's end of its link: IPv4 only, its address, lo and the device up, its egress shaped."""
    _ip("netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
    _ip("-n", ns, "addr", "add", f"{addr}/{PREFIX}", "dev", dev)
    _ip("-n", ns, "link", "set", "lo", "up")
    _ip("-n", ns, "link", "set", dev, "up")
    if spec.shaped:
        _tc(ns, *qdisc_args(spec, dev))


@contextmanager
def pair(spec: NetworkSpec) -> Iterator[Link]:
    """Create the namespace pair for `spec`, yield it, delete it; NetnsUnavailable where it cannot be made."""
    reason = unavailable_reason(spec)
    if reason:
        raise NetnsUnavailable(reason)
    tag = secrets.token_hex(3)
    link = Link((f"cb-{tag}-0", f"cb-{tag}-1"), (f"cb{tag}v0", f"cb{tag}v1"), ADDRESSES, spec)
    try:
        for ns in link.namespaces:
            _ip("netns", "add", ns)
            _live.add(ns)
        (ns0, ns1), (if0, if1) = link.namespaces, link.interfaces
        _ip("link", "add", if0, "netns", ns0, "type", "veth", "peer", "name", if1, "netns", ns1)
        for ns, dev, addr in zip(link.namespaces, link.interfaces, link.addresses):
            _bring_up(ns, dev, addr, spec)
        yield link
    finally:
        for ns in link.namespaces:
            if ns in _live:
                _delete(ns)


@contextmanager
def bridged(spec: NetworkSpec, n: int) -> Iterator[Link]:
    """`n` namespaces on a Linux bridge in a hub namespace (module docstring), yielded as a Link; all deleted after."""
    if not 2 < n <= MAX_NODES:
        raise ValueError(f"bridged: 3 to {MAX_NODES} nodes, got {n}")
    reason = unavailable_reason(spec)
    if reason:
        raise NetnsUnavailable(reason)
    tag = secrets.token_hex(3)
    hub, bridge = f"cb-{tag}-hub", f"cb{tag}br"
    link = Link(tuple(f"cb-{tag}-{i}" for i in range(n)), tuple(f"cb{tag}v{i}" for i in range(n)),
                tuple(f"10.231.0.{i + 1}" for i in range(n)), spec)  # fmt: skip
    try:
        for ns in (hub, *link.namespaces):
            _ip("netns", "add", ns)
            _live.add(ns)
        _ip("-n", hub, "link", "add", bridge, "type", "bridge")
        _ip("-n", hub, "link", "set", bridge, "up")
        for i, (ns, dev, addr) in enumerate(zip(link.namespaces, link.interfaces, link.addresses)):
            port = f"cb{tag}p{i}"
            _ip("link", "add", dev, "netns", ns, "type", "veth", "peer", "name", port, "netns", hub)
            _ip("-n", hub, "link", "set", port, "master", bridge)
            _ip("-n", hub, "link", "set", port, "up")
            _bring_up(ns, dev, addr, spec)
            if spec.shaped:
                _tc(hub, *qdisc_args(spec, port))
        yield link
    finally:
        for ns in (*link.namespaces, hub):
            if ns in _live:
                _delete(ns)


def nodes(spec: NetworkSpec, n: int) -> contextlib.AbstractContextManager[Link]:
    """`pair(spec)` for 2 nodes, `bridged(spec, n)` for more."""
    return pair(spec) if n == 2 else bridged(spec, n)


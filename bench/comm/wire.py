"""Wire bytes: what the kernel's TCP stack carried for this rank's sockets.

Each rank reads `TCP_INFO` (tcpi_bytes_sent / tcpi_bytes_received, the RFC 4898 counters
that `ss -ti` prints) of its own TCP sockets at the start and end of the measured window.
Counting per socket, rather than reading interface counters such as /proc/net/dev on the
shared loopback, excludes every other process's traffic. The rendezvous store's sockets
(MASTER_PORT) are excluded too, so what remains is the collective backend's traffic
(gloo's pairs). The counters are TCP payload bytes: IP/TCP headers (~52 B per segment on
loopback, ~0.1%) are not included; `segs_out` is kept for those who want them.

NCCL moves data over NVLink/PCIe/InfiniBand, invisible to these counters: wire bytes are
None there, with a reason.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass

# Offsets in struct tcp_info (linux/tcp.h): bytes_received @128 (u64), segs_out @136
# (u32), segs_in @140 (u32), bytes_sent @200 (u64, Linux >= 4.19).
_TCP_INFO_LEN = 232
_OFF_BYTES_RECEIVED, _OFF_SEGS_OUT, _OFF_SEGS_IN, _OFF_BYTES_SENT = 128, 136, 140, 200


@dataclass(frozen=True, slots=True)
class SocketCounters:
    sent: int
    received: int
    segs_out: int
    segs_in: int


def _socket_fds() -> list[int]:
    fds = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                fds.append(int(name))
        except OSError:  # closed while listing
            continue
    return fds


def _counters(fd: int, exclude_ports: set[int]) -> tuple[tuple[object, ...], SocketCounters] | None:
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    try:
        if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        try:
            local, peer = sock.getsockname(), sock.getpeername()
        except OSError:  # listening or unconnected
            return None
        if local[1] in exclude_ports or peer[1] in exclude_ports:
            return None
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
        if len(raw) < _OFF_BYTES_SENT + 8:
            return None
        (received,) = struct.unpack_from("Q", raw, _OFF_BYTES_RECEIVED)
        segs_out, segs_in = struct.unpack_from("II", raw, _OFF_SEGS_OUT)
        (sent,) = struct.unpack_from("Q", raw, _OFF_BYTES_SENT)
        return (local, peer), SocketCounters(sent, received, segs_out, segs_in)
    finally:
        sock.close()


def snapshot(exclude_ports: set[int] | None = None) -> dict[tuple[object, ...], SocketCounters]:
    """Counters of every connected TCP socket of this process, keyed by (local, peer)."""
    ports = exclude_ports if exclude_ports is not None else _store_ports()
    out = {}
    for fd in _socket_fds():
        got = _counters(fd, ports)
        if got:
            out[got[0]] = got[1]
    return out


def _store_ports() -> set[int]:
    port = os.environ.get("MASTER_PORT")
    return {int(port)} if port and port.isdigit() else set()


class WireCounter:
    """Bytes this rank's sockets sent/received between `start()` and `stop()`."""

    def __init__(self) -> None:
        self._before: dict[tuple[object, ...], SocketCounters] = {}

    def start(self) -> None:
        self._before = snapshot()

    def stop(self) -> dict[str, int]:
        after = snapshot()
        zero = SocketCounters(0, 0, 0, 0)
        delta = {"sent": 0, "received": 0, "segs_out": 0, "sockets": len(after)}
        for key, now in after.items():
            then = self._before.get(key, zero)
            delta["sent"] += now.sent - then.sent
            delta["received"] += now.received - then.received
            delta["segs_out"] += now.segs_out - then.segs_out
        return delta

"""Wire bytes: what the kernel's TCP stack carried for this rank's sockets.

Each rank reads `TCP_INFO` (tcpi_bytes_sent / tcpi_bytes_received, the RFC 4898 counters
that `ss -ti` prints) of its own TCP sockets at the start and end of the measured window.
Counting per socket, rather than reading interface counters such as /proc/net/dev on the
shared loopback, excludes every other process's traffic. The rendezvous store's sockets
(MASTER_PORT) are excluded too, so what remains is the collective backend's traffic
(gloo's pairs). The counters are TCP payload bytes: IP/TCP headers (~52 B per segment on
loopback, ~0.1%) are not included; `segs_out` is kept for those who want them.

NCCL moves data over NVLink/PCIe/InfiniBand, invisible to these counters: wire bytes are
None there, with a reason. They are None with a reason on gloo too rather than a number
short of the truth: when a socket of the window's start is gone at its end (its bytes went
with it), or when a multi-rank group's sockets yield no TCP_INFO (`WireUnavailable`).
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass

import torch.distributed as dist

# Offsets in struct tcp_info (linux/tcp.h): bytes_received @128 (u64), segs_out @136
# (u32), segs_in @140 (u32), bytes_sent @200 (u64, Linux >= 4.19).
_TCP_INFO_LEN = 232
_OFF_BYTES_RECEIVED, _OFF_SEGS_OUT, _OFF_SEGS_IN, _OFF_BYTES_SENT = 128, 136, 140, 200


@dataclass(frozen=True, slots=True)
class SocketCounters:
    """One connected TCP socket: where it is and what the kernel counted on it."""

    fd: int
    local: tuple[object, ...]  # getsockname()
    peer: tuple[object, ...]  # getpeername()
    sent: int
    received: int
    segs_out: int
    segs_in: int

    def label(self) -> str:
        return f"fd {self.fd} {self.local[0]}:{self.local[1]}->{self.peer[0]}:{self.peer[1]}"


class WireUnavailable(RuntimeError):
    """The window's wire bytes cannot be known; the message says why (stored as the null reason)."""


def _socket_inodes() -> dict[int, int]:
    """fd -> socket inode for every socket fd of this process ("socket:[inode]" in /proc)."""
    inodes = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # closed while listing
            continue
        if target.startswith("socket:["):
            inodes[int(name)] = int(target[len("socket:[") : -1])
    return inodes


def _counters(fd: int, exclude_ports: set[int]) -> SocketCounters | None:
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
        if len(raw) < _OFF_BYTES_SENT + 8:  # kernel < 4.19: no tcpi_bytes_sent
            return None
        (received,) = struct.unpack_from("Q", raw, _OFF_BYTES_RECEIVED)
        segs_out, segs_in = struct.unpack_from("II", raw, _OFF_SEGS_OUT)
        (sent,) = struct.unpack_from("Q", raw, _OFF_BYTES_SENT)
        return SocketCounters(fd, local, peer, sent, received, segs_out, segs_in)
    finally:
        sock.close()


def snapshot(exclude_ports: set[int] | None = None) -> dict[int, SocketCounters]:
    """Counters of every connected TCP socket of this process, keyed by socket inode.

    The inode names the socket itself: a dup'ed fd is not counted twice, and a socket
    closed and replaced on the same fd or between the same addresses gets a new key.
    """
    ports = exclude_ports if exclude_ports is not None else _store_ports()
    out = {}
    for fd, inode in _socket_inodes().items():
        got = _counters(fd, ports)
        if got:
            out[inode] = got
    return out


def _store_ports() -> set[int]:
    port = os.environ.get("MASTER_PORT")
    return {int(port)} if port and port.isdigit() else set()


def _multi_rank() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class WireCounter:
    """Bytes this rank's sockets sent/received between `start()` and `stop()`.

    `stop()` raises WireUnavailable rather than return a number that silently misses bytes:
    when a socket present at the start is gone (or replaced) at the stop, since what it
    carried in the window went with it, and when the backend is expected to own sockets
    (`expect_sockets`; by default, a default process group of more than one rank) but no
    socket yielded TCP_INFO. Sockets opened inside the window count from 0. All of it runs
    outside the timed steps.
    """

    def __init__(self, *, expect_sockets: bool | None = None) -> None:
        self._expect = expect_sockets
        self._before: dict[int, SocketCounters] = {}

    def start(self) -> None:
        self._before = snapshot()
        if self._expect is None:
            self._expect = _multi_rank()

    def stop(self) -> dict[str, int]:
        after = snapshot()
        if self._expect and not self._before:
            raise WireUnavailable("no TCP socket of the backend yielded TCP_INFO at the window's start")
        # Also covers no socket at the stop: then every socket of the start is lost.
        lost = [then.label() for key, then in self._before.items() if key not in after]
        if lost:
            raise WireUnavailable(
                f"socket(s) of the window's start gone or unreadable at its stop (closed, reset or replaced), "
                f"their bytes in the window unknown: {', '.join(lost)}"
            )
        went_down = [now.label() for key, now in after.items() if key in self._before and _fell(self._before[key], now)]
        if went_down:
            raise WireUnavailable(f"TCP_INFO counters went down during the window: {', '.join(went_down)}")
        delta = {"sent": 0, "received": 0, "segs_out": 0, "sockets": len(after)}
        for key, now in after.items():
            then = self._before.get(key)
            delta["sent"] += now.sent - (then.sent if then else 0)
            delta["received"] += now.received - (then.received if then else 0)
            delta["segs_out"] += now.segs_out - (then.segs_out if then else 0)
        return delta


def _fell(then: SocketCounters, now: SocketCounters) -> bool:
    return now.sent < then.sent or now.received < then.received or now.segs_out < then.segs_out

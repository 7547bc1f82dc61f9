"""A node's link counters: the bytes and packets its interface moved, headers included.

The third byte counter beside `accounting` (what the process group was asked to move) and
`wire` (what its TCP sockets carried): for trials across network namespaces each node has
an interface of its own, and `/sys/class/net/<if>/statistics` counts what crossed it.
"""

from __future__ import annotations

import os


def read_counters(iface: str) -> dict[str, int]:
    """rx/tx bytes and packets of `iface` as this process's network namespace sees it."""
    base = f"/sys/class/net/{iface}/statistics"
    out = {}
    for key in ("rx_bytes", "rx_packets", "tx_bytes", "tx_packets"):
        with open(f"{base}/{key}") as f:
            out[key] = int(f.read())
    return out


# Set by the runner for trials across network namespaces: the interface of this rank's node.
LINK_IFACE_ENV = "COMMBENCH_LINK_IFACE"


class LinkCounter:
    """The node's link counters over the window (`/sys/class/net/<if>/statistics`).

    Read by the node's first local rank only, so that a node's ranks count its link once.
    """

    def __init__(self) -> None:
        self.iface = os.environ.get(LINK_IFACE_ENV)
        self.reason: str | None = None
        if not self.iface:
            self.reason = "not across network namespaces: no link of its own to count"
        elif os.environ.get("LOCAL_RANK", "0") != "0":
            self.reason = "counted by the node's local rank 0"
        self._before: dict[str, int] = {}

    def start(self) -> None:
        if self.reason is None and self.iface:
            self._before = read_counters(self.iface)

    def stop(self) -> dict[str, int] | None:
        if self.reason is not None or not self.iface:
            return None
        after = read_counters(self.iface)
        return {k: after[k] - self._before[k] for k in after}

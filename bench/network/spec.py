"""Network names of the `network` axis: `veth`, or a rate with an optional one-way delay (`100mbit+5ms`).

The units are tc's: `kbit`, `mbit` and `gbit` are 10^3, 10^6 and 10^9 bits per second; a
delay is `us`, `ms` or `s`. `veth` is the namespace pair with no shaping (the veth's own
speed, memory-bound on one machine).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bench.errors import BenchError

UNSHAPED = "veth"
_RATE_UNITS = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
_DELAY_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_GRAMMAR = re.compile(r"^(?P<rate>\d+(?:\.\d+)?)(?P<ru>kbit|mbit|gbit)(?:\+(?P<delay>\d+(?:\.\d+)?)(?P<du>us|ms|s))?$")


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    """One emulated link: its name, rate (bits/s) and one-way delay (s); None where not shaped."""

    name: str
    rate_bps: float | None
    delay_s: float | None

    @property
    def shaped(self) -> bool:
        return self.rate_bps is not None

    @property
    def burst_bytes(self) -> int | None:
        """The tbf bucket of a shaped link (`tbf_burst_bytes`); None where not shaped."""
        return None if self.rate_bps is None else tbf_burst_bytes(self.rate_bps)


def tbf_burst_bytes(rate_bps: float) -> int:
    """The token bucket a shaped link gets: one 64 KiB GSO segment, or a kernel tick's tokens (4 ms
    at HZ=250), whichever is larger; with less, tbf cannot reach its rate. After an idle gap of
    burst/rate or more, a full bucket lets that many bytes through at the veth's own speed."""
    return max(65536 + 1514, int(rate_bps / 8 * 0.004))


def parse_network(name: str) -> NetworkSpec:
    """`"veth"`, `"1gbit"`, `"100mbit+5ms"` -> NetworkSpec; anything else is a BenchError."""
    if name == UNSHAPED:
        return NetworkSpec(name, None, None)
    m = _GRAMMAR.match(name) if isinstance(name, str) else None
    if not m:
        raise BenchError(
            f"network {name!r}: expected {UNSHAPED!r} or RATE[+DELAY] such as '1gbit' or '100mbit+5ms' "
            f"(rate units {', '.join(_RATE_UNITS)}; delay units {', '.join(_DELAY_UNITS)})"
        )
    rate = float(m["rate"]) * _RATE_UNITS[m["ru"]]
    if rate <= 0:
        raise BenchError(f"network {name!r}: the rate must be > 0")
    delay = float(m["delay"]) * _DELAY_UNITS[m["du"]] if m["delay"] else None
    return NetworkSpec(name, rate, delay)

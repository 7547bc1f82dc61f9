"""The alpha-beta time of one collective: latency steps x alpha + bytes each rank sends in series / beta.

Textbook costs (Thakur, Rabenseifner & Gropp, "Optimization of Collective Communication
Operations in MPICH", IJHPCA 2005; Patarasuk & Yuan 2009 for the ring all-reduce), n ranks,
message S bytes (nccl-tests' S: the whole array for all_gather/reduce_scatter):

    ring  all_reduce       2(n-1) a + 2(n-1)/n S b
          all_gather       (n-1)  a +  (n-1)/n S b     (also reduce_scatter, all_to_all)
          broadcast        (n-1)  a +          S b     (pipelined ring)
    tree  all_reduce       2 lg n a + 2(n-1)/n S b     (Rabenseifner: recursive halving + doubling)
          all_gather       lg n   a +  (n-1)/n S b     (recursive doubling; also reduce_scatter)
          broadcast        lg n   a +     lg n S b     (binomial tree)
          all_to_all       lg n   a + lg n / 2 S b     (Bruck)
    any   send / recv      1      a +          S b

with a = alpha (s) and b = 1/beta (s/B). `gloo` is the ring as gloo runs it
(`bench.comm.cost_model.GLOO_NOTES`): reduce_scatter is an all_reduce of the whole input,
and broadcast is the root sending S to each other rank in turn: (n-1) a + (n-1) S b.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

Algorithm = Literal["ring", "tree", "gloo"]
ALGORITHMS: tuple[str, ...] = get_args(Algorithm)
OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast", "send", "recv")


@dataclass(frozen=True, slots=True)
class Terms:
    """One collective's cost in alpha-beta form: `latency_steps` x alpha + `serial_bytes` / beta."""

    latency_steps: float
    serial_bytes: float

    def seconds(self, alpha_s: float, beta_Bps: float) -> float:
        return self.latency_steps * alpha_s + self.serial_bytes / beta_Bps


def _lg(n: int) -> float:
    return float(math.ceil(math.log2(n)))


def terms(op: str, msg_bytes: float, n: int, algorithm: Algorithm = "ring") -> Terms:
    """Latency steps and serial bytes of `op` on `n` ranks under `algorithm` (module docstring's table)."""
    if op not in OPS:
        raise ValueError(f"no alpha-beta model for {op!r} (known: {', '.join(OPS)})")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r} (known: {', '.join(ALGORITHMS)})")
    s = float(msg_bytes)
    if op in ("send", "recv"):
        return Terms(1.0, s) if n > 1 else Terms(0.0, 0.0)
    if n <= 1:
        return Terms(0.0, 0.0)
    f = (n - 1) / n
    if algorithm == "gloo":
        if op == "reduce_scatter":
            op = "all_reduce"
        if op == "broadcast":
            return Terms(n - 1.0, (n - 1) * s)
        algorithm = "ring"
    if algorithm == "ring":
        table = {"all_reduce": (2 * (n - 1), 2 * f * s), "broadcast": (n - 1, s)}
        steps, nbytes = table.get(op, (n - 1, f * s))
        return Terms(float(steps), nbytes)
    lg = _lg(n)
    tree = {"all_reduce": (2 * lg, 2 * f * s), "broadcast": (lg, lg * s), "all_to_all": (lg, lg / 2 * s)}
    steps, nbytes = tree.get(op, (lg, f * s))
    return Terms(float(steps), nbytes)


def seconds(op: str, msg_bytes: float, n: int, alpha_s: float, beta_Bps: float, algorithm: Algorithm = "ring") -> float:
    """The alpha-beta time of one call."""
    return terms(op, msg_bytes, n, algorithm).seconds(alpha_s, beta_Bps)


def best_seconds(op: str, msg_bytes: float, n: int, alpha_s: float, beta_Bps: float) -> tuple[float, Algorithm]:
    """The faster of ring and tree for this call (what NCCL's tuner picks per size), and which it was."""
    ring = seconds(op, msg_bytes, n, alpha_s, beta_Bps, "ring")
    tree = seconds(op, msg_bytes, n, alpha_s, beta_Bps, "tree")
    return (ring, "ring") if ring <= tree else (tree, "tree")

"""What `commbench advise` is asked: a model and a cluster, from command-line flags or a TOML file.

    # advise.toml (commbench advise --config advise.toml; commbench report RESULTS --advise advise.toml)
    model = "llama-7b"
    nodes = 8
    gpus_per_node = 8
    link = "100gbit"        # a rate, or 10gbe, 25gbe, 100gbe, ib-hdr, ib-ndr
    mem = "80GB"
    latency = "5us"         # optional: the link's per-message latency (default: its published figure)
    intra_link = "nvlink4"  # optional
    tflops = 160.0          # optional: achieved TFLOP/s per GPU
    tokens = 4096           # optional: tokens per GPU per step

Every key is checked: an unknown one, a missing one or a value of the wrong type is a
`BenchError` naming it. `resolve` turns the request into the model's shape and the
`advise.Cluster` (parsing the link, its latency and the memory).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.predict import advise as adv
from bench.predict import links
from bench.predict.shapes import SHAPES, ModelShape

_BYTES = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str) -> float:
    """`80GB` -> 8e10, `24GiB` -> 24 x 2^30; BenchError for anything else."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = (m[2] or "b").lower() if m else ""
    if not m or unit not in _BYTES or float(m[1]) <= 0:
        raise BenchError(f"memory {text!r}: expected a positive size such as 80GB or 24GiB (units: {', '.join(_BYTES)})")
    return float(m[1]) * _BYTES[unit]


@dataclass(frozen=True, slots=True)
class AdviseRequest:
    """The question, as the user wrote it (strings where the user writes units)."""

    model: str
    nodes: int
    link: str
    mem: str
    gpus_per_node: int = 1
    latency: str | None = None
    intra_link: str = "nvlink4"
    tflops: float = 160.0
    tokens: int = 4096

    @classmethod
    def from_mapping(cls, data: dict[str, Any], where: str) -> AdviseRequest:
        """From a TOML table or parsed flags; BenchError naming the unknown, missing or mistyped key."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise BenchError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(known)}")
        missing = [n for n in ("model", "nodes", "link", "mem") if data.get(n) is None]
        if missing:
            raise BenchError(f"{where}: missing {missing[0]!r}")
        types = {"nodes": int, "gpus_per_node": int, "tokens": int, "tflops": (int, float)}
        for key, value in data.items():
            want = types.get(key, str)
            if value is not None and (not isinstance(value, want) or isinstance(value, bool)):
                raise BenchError(f"{where}: {key} = {value!r} is not a{'n integer' if want is int else ' number' if key == 'tflops' else ' string'}")
        return cls(**{k: v for k, v in data.items() if v is not None})

    @classmethod
    def from_toml(cls, path: Path) -> AdviseRequest:
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise BenchError(f"advise config {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise BenchError(f"advise config {path}: not valid TOML ({exc})") from None
        return cls.from_mapping(data, f"advise config {path}")

    def resolve(self) -> tuple[ModelShape, adv.Cluster]:
        """The model's shape and the cluster; BenchError for an unknown model, link, latency or memory."""
        if self.model not in SHAPES:
            raise BenchError(f"unknown model {self.model!r}; known: {', '.join(SHAPES)}")
        lat = None
        if self.latency:
            try:
                lat = links.parse_network(f"1gbit+{self.latency}").delay_s  # the delay grammar of network names (us, ms, s)
            except BenchError:
                raise BenchError(f"--latency {self.latency!r}: expected a time such as 5us or 1.5ms") from None
        try:
            cluster = adv.Cluster(nodes=self.nodes, gpus_per_node=self.gpus_per_node, link=links.resolve(self.link, lat),
                                  intra=links.resolve(self.intra_link), mem_bytes=parse_bytes(self.mem),
                                  flops=self.tflops * 1e12, tokens_per_gpu=self.tokens)  # fmt: skip
        except ValueError as exc:
            raise BenchError(f"advise: {exc}") from None
        return SHAPES[self.model], cluster

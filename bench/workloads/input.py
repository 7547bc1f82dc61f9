"""`input`: how batches reach the ranks. A data rank reads and collates each batch and broadcasts it to the others.

Rank 0 is the data rank, as in Megatron's `broadcast_data`, where one rank of each
tensor-parallel group reads the batch every rank of the group consumes: each step it
takes documents from the source, collates them with the trial's DATA strategies (`pad_max`
by default, `pad_dynamic`, `pack`; ids as int64 or, with `ids_int32`, int32), and
broadcasts the batch; a collation whose layout changes per batch broadcasts a 1-element
int64 header first. On CUDA the data rank copies the batch host to device before the NCCL
broadcast (`h2d_bytes_per_step` in the metrics). A step is the data rank reading,
collating and sending, or a receiver allocating and receiving; no model runs, so the
step time is the input path alone.

Why a workload of its own rather than options of `train`: train makes every rank's batches
locally from the seeded Markov source (fixed length, nothing moved), and its bytes are the
gradient strategies' oracle; input bytes mixed into them would blur both.

Sources (`options.source`): `corpus` reads a text file (`options.corpus`, else
$COMMBENCH_WIKITEXT, else ../shared/data/wikitext-2/valid.txt): each non-empty line is a
document, each whitespace-separated word one token (its CRC-32 modulo the vocabulary; word
counts run about 0.75x a BPE tokenizer's), plus an end-of-document token. `synthetic`
draws document lengths 1 + floor(Exp(mean seq_len / 2)) and uniform ids from a seeded
generator. `auto` (the default) reads the corpus when the file exists and otherwise
uses the synthetic source; `input_source` in the metrics says which, and why.

Measured on the data rank over the window: input bytes per step from the flight recorder,
the cost model's bytes from the documents' lengths alone (`analytic_ops`), the share of
sent id slots that are padding, the document tokens per step and those cut off by
seq_len. After the window every rank's SHA-256 of what it received must equal rank 0's
of what it sent, or the trial fails.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist

from bench.comm.cost_model import InputLayout, input_broadcast_bytes
from bench.contracts import Accuracy, Parallel, RankResult, TrialConfig
from bench.distributed.env import RankEnv
from bench.errors import SkipTrial
from bench.eval.corpus import Corpus, find
from bench.meters.window import Window
from bench.strategies import Aspect, Composition, TrialState, effective
from bench.strategies.collation import HEADER_DTYPE, Collated, Collation, DocStream
from bench.strategies.metrics import Metric
from bench.workloads import Workload, register
from bench.workloads.common import MODEL_METRICS, build_state
from bench.workloads.sources import stream_seed

HEADER_BYTES = HEADER_DTYPE.itemsize


@dataclass(kw_only=True, slots=True, frozen=True)
class InputOptions:
    """`options.*` of the input workload: where documents come from."""

    source: Literal["auto", "corpus", "synthetic"] = "auto"
    corpus: str | None = None  # a text file; else $COMMBENCH_WIKITEXT, else ../shared/data/wikitext-2/valid.txt


def corpus_documents(path: Path, vocab: int) -> list[torch.Tensor]:
    """Each non-empty line a document: one id per word (CRC-32 mod vocab-1), then the end id vocab-1."""
    eos = vocab - 1
    docs = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            words = line.split()
            if words:
                ids = [zlib.crc32(w.encode()) % eos for w in words]
                docs.append(torch.tensor([*ids, eos], dtype=torch.int64))
    return docs


def synthetic_documents(seed: int, mean_length: float, vocab: int) -> Iterator[torch.Tensor]:
    """Endless documents of 1 + floor(Exp(mean_length)) tokens, uniform ids, the last one vocab-1."""
    g = torch.Generator().manual_seed(seed)
    while True:
        u = float(torch.rand((), generator=g, dtype=torch.float64))
        n = 1 + math.floor(-math.log1p(-u) * mean_length)
        body = torch.randint(0, vocab - 1, (n - 1,), generator=g, dtype=torch.int64)
        yield torch.cat([body, torch.tensor([vocab - 1])])


def open_source(cfg: TrialConfig, opts: InputOptions, vocab: int) -> tuple[Iterator[torch.Tensor], str]:
    """The data rank's documents and a line saying where they come from."""
    found = find(opts.corpus) if opts.source != "synthetic" else "options.source = synthetic"
    if isinstance(found, Corpus):
        docs = corpus_documents(found.path, vocab)
        return itertools.cycle(docs), f"corpus: {found.path} ({len(docs)} documents, word-level ids)"
    if opts.source == "corpus":
        raise SkipTrial(found)
    why = found
    mean = cfg.seq_len / 2
    seed = stream_seed(cfg.data.seed, cfg.seed, "input")
    return synthetic_documents(seed, mean, vocab), f"synthetic: lengths 1 + floor(Exp(mean {mean:g})), seed {seed} ({why})"


class Feed:
    """One rank's side of the input path: the data rank collates and sends, the others receive.

    Every buffer that crossed is kept (on the host for the data rank, on the device for the
    receivers: a few KB per step), for the digest after the window.
    """

    def __init__(self, state: TrialState, stream: DocStream | None) -> None:
        if state.collation is None:
            raise RuntimeError("no collation: the input workload needs a DATA strategy (pad_max is the default)")
        self.collation: Collation = state.collation
        self.stream = stream
        self.rows, self.row_len = state.cfg.batch_size, state.cfg.seq_len
        self.pad_id = state.spec.vocab_size - 1
        self.id_dtype = state.id_dtype
        self.device = state.env.device
        self.static = self.collation.static_layout(self.rows, self.row_len)
        self.kept: list[torch.Tensor] = []
        self.batches: list[Collated] = []
        self.h2d_bytes: list[int] = []

    def step(self) -> None:
        if self.stream is not None:
            self._send(self.stream)
        else:
            self._receive()

    def _send(self, stream: DocStream) -> None:
        batch = self.collation.collate(stream, self.rows, self.row_len, self.pad_id)
        wire = torch.cat([batch.ids.flatten(), batch.aux]).to(self.id_dtype)
        moved = 0
        if self.static is None:
            header = torch.tensor([self.collation.header_value(batch)], dtype=HEADER_DTYPE).to(self.device)
            dist.broadcast(header, src=0)
            moved += header.nbytes
        on_device = wire.to(self.device)  # host to device on CUDA; the same tensor on CPU
        dist.broadcast(on_device, src=0)
        self.batches.append(batch)
        self.kept.append(wire)
        self.h2d_bytes.append(moved + wire.nbytes)

    def _receive(self) -> None:
        layout = self.static
        if layout is None:
            header = torch.empty(1, dtype=HEADER_DTYPE, device=self.device)
            dist.broadcast(header, src=0)
            layout = self.collation.layout_from_header(int(header.item()), self.rows, self.row_len)
        buffer = torch.empty(layout.elements, dtype=self.id_dtype, device=self.device)
        dist.broadcast(buffer, src=0)
        self.kept.append(buffer)

    def digest(self) -> bytes:
        h = hashlib.sha256()
        for t in self.kept:
            h.update(t.to("cpu", torch.int64).numpy().tobytes())
        return h.digest()


def verify(feed: Feed, env: RankEnv) -> None:
    """Every receiver's digest of what it received must equal the data rank's of what it sent."""
    local = feed.digest()
    ref = torch.tensor(list(local), dtype=torch.uint8, device=env.device)
    dist.broadcast(ref, src=0)
    theirs = bytes(ref.cpu().tolist())
    if theirs != local:
        raise RuntimeError(f"received batches differ from rank 0's: digest {local.hex()[:16]} vs {theirs.hex()[:16]}")


def measured(feed: Feed, stream: DocStream, cfg: TrialConfig, window_bytes: float | None) -> tuple[dict[str, Any], float]:
    """The data rank's metrics over the measured steps, and the cost model's bytes per step."""
    batches = feed.batches[cfg.warmup_steps :]
    slots = sum(b.ids.numel() for b in batches)
    layouts: list[InputLayout] = feed.collation.modelled_layouts(
        stream.read_lengths, feed.rows, feed.row_len, cfg.warmup_steps + cfg.steps
    )[cfg.warmup_steps :]
    header = 0 if feed.static is not None else HEADER_BYTES
    modelled = sum(input_broadcast_bytes(x, feed.id_dtype.itemsize, header) for x in layouts) / cfg.steps
    metrics: dict[str, Any] = {
        "collation": feed.collation.name,
        "id_dtype": str(feed.id_dtype).removeprefix("torch."),
        "padded_token_fraction": sum(b.padded_tokens for b in batches) / slots,
        "input_tokens_per_step": sum(b.real_tokens for b in batches) / cfg.steps,
        "truncated_tokens_per_step": sum(b.truncated_tokens for b in batches) / cfg.steps,
        "input_bytes_per_step": window_bytes,
    }
    if feed.device.type == "cuda":
        metrics["h2d_bytes_per_step"] = sum(feed.h2d_bytes[cfg.warmup_steps :]) / cfg.steps
    return metrics, modelled


# Why an input column is null on the input workload (elsewhere: not measured there).
UNTRACKED = "byte accounting disabled (track_comm=false)"


def run(cfg: TrialConfig, comp: Composition, env: RankEnv) -> RankResult:
    opts: InputOptions = WORKLOAD.options(cfg)
    if env.world_size < 2:
        raise SkipTrial("input needs at least 2 ranks (rank 0 reads and sends, the others receive)")
    comp = effective(comp, cfg.workload)
    state = build_state(cfg, comp, env, (Aspect.DATA,))  # the model gives the vocabulary; it never runs
    stream, source = None, ""
    if env.is_main:
        docs, source = open_source(cfg, opts, state.spec.vocab_size)
        stream = DocStream(docs)
    feed = Feed(state, stream)
    window = Window(env.device, env.backend, track_comm=cfg.track_comm).measure(feed.step, warmup=cfg.warmup_steps, steps=cfg.steps)
    verify(feed, env)
    metrics, ops = dict(state.metrics), None
    if stream is not None:
        window_bytes = window.comm_summary["msg_bytes_per_step"] if window.comm_summary is not None else None
        measures, modelled = measured(feed, stream, cfg, window_bytes)
        metrics.update(measures, input_source=source)
        ops = {"broadcast": modelled}
    return RankResult(
        rank=env.rank,
        window=window,
        tokens_per_step=None,  # no model consumes them: see input_tokens_per_step
        accuracy=Accuracy(),
        metrics=metrics,
        analytic_ops=ops,
        parallel=Parallel(dp=env.world_size),
    )


WORKLOAD = register(
    Workload(
        name="input",
        summary="rank 0 reads, collates (pad_max, pad_dynamic, pack) and broadcasts each batch: input bytes, padding share",
        run=run,
        options_type=InputOptions,
        metrics=(
            *MODEL_METRICS,
            # In this order: the order of their null reasons in a row.
            Metric("input_bytes_per_step", float, "B/step", column="input_bytes_per_step",
                   doc="bytes the data rank broadcast per step", null_reason=UNTRACKED),
            Metric("input_tokens_per_step", float, "tokens/step", column="input_tokens_per_step",
                   doc="document tokens per batch", null_reason=UNTRACKED),
            Metric("padded_token_fraction", float, "ratio", column="padded_token_fraction",
                   doc="share of the id slots sent that are padding", null_reason=UNTRACKED),
            Metric("truncated_tokens_per_step", float, "tokens/step", doc="document tokens cut off by the row length"),
            Metric("h2d_bytes_per_step", float, "B/step", doc="CUDA: host-to-device bytes of the batches"),
            Metric("collation", str, doc="the collation that made the batches"),
            Metric("id_dtype", str, doc="the dtype of the ids on the wire"),
            Metric("input_source", str, doc="where the documents came from, and why"),
        ),  # fmt: skip
    )
)

"""The input pipeline (DATA aspect): how variable-length documents become a batch, and the dtype its ids travel in.

A batch is `rows` token rows of at most `row_len` slots. Three collations, one per trial
(exclusive group "collation"):
- `pad_max` (the implicit default): one document per row, truncated to `row_len` and
  padded to it; every batch has the same shape, so receivers need no header.
- `pad_dynamic`: one document per row, padded only to the batch's longest (at most
  `row_len`); the column count changes per batch, so it travels first as a 1-element
  int64 header.
- `pack`: documents laid end to end over the flat `rows x row_len` buffer, no padding; a
  document that does not fit continues in the next batch. Document boundaries travel
  as cu_seqlens (offsets into the flat buffer, flash-attn's varlen convention), whose
  length changes per batch: a 1-element int64 header.
The padding collations also send each row's length (the attention mask, rebuilt by the
receiver). `ids_int32` sends ids and lengths/offsets as int32 instead of int64.

Each collation states its modelled layouts through the pure functions of
`bench.comm.cost_model` (`padded_shape`, `packed_pieces`), from nothing but the lengths of
the documents read; the workload compares the flight recorder's bytes with them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from bench.comm.cost_model import InputLayout, packed_pieces, padded_shape
from bench.strategies import STRATEGIES
from bench.strategies.base import Aspect, Strategy, TrialState

COLLATION = "collation"
HEADER_DTYPE = torch.int64


class DocStream:
    """Documents (1-D int64 ids) in reading order, with room to push a remainder back in front.

    `read_lengths` lists every document taken from the source, in order, before any split:
    what the cost model is computed from.
    """

    def __init__(self, source: Iterator[torch.Tensor]) -> None:
        self._source = source
        self._front: deque[torch.Tensor] = deque()
        self.read_lengths: list[int] = []

    def next(self) -> torch.Tensor:
        if self._front:
            return self._front.popleft()
        doc = next(self._source)
        self.read_lengths.append(int(doc.numel()))
        return doc

    def push_front(self, doc: torch.Tensor) -> None:
        self._front.appendleft(doc)


@dataclass(frozen=True, slots=True)
class Collated:
    """One batch as collated on the data rank: ids `[rows, cols]`, aux (row lengths or cu_seqlens), token counts."""

    ids: torch.Tensor
    aux: torch.Tensor
    real_tokens: int  # document tokens in the batch (the rest of its slots are padding)
    truncated_tokens: int  # document tokens cut off by `row_len` and never sent

    @property
    def layout(self) -> InputLayout:
        return InputLayout(rows=self.ids.shape[0], cols=self.ids.shape[1], aux=self.aux.numel())

    @property
    def padded_tokens(self) -> int:
        return self.ids.numel() - self.real_tokens


def pad_rows(docs: list[torch.Tensor], cols: int, pad_id: int) -> Collated:
    """One document per row, truncated to `cols` and padded with `pad_id`; aux = each row's length."""
    ids = torch.full((len(docs), cols), pad_id, dtype=torch.int64)
    lengths = torch.tensor([min(d.numel(), cols) for d in docs], dtype=torch.int64)
    for row, (doc, n) in enumerate(zip(docs, lengths.tolist())):
        ids[row, :n] = doc[:n]
    real = int(lengths.sum())
    return Collated(ids, lengths, real, sum(d.numel() for d in docs) - real)


def pack_rows(stream: DocStream, rows: int, row_len: int) -> Collated:
    """Documents end to end over `rows * row_len` slots; the overflow goes back to the stream.

    aux = cu_seqlens: the offset of every document piece in the flat buffer, then its end.
    """
    capacity, filled, pieces = rows * row_len, 0, []
    while filled < capacity:
        doc = stream.next()
        take = min(doc.numel(), capacity - filled)
        pieces.append(doc[:take])
        if take < doc.numel():
            stream.push_front(doc[take:])
        filled += take
    offsets = torch.tensor([0, *(p.numel() for p in pieces)], dtype=torch.int64).cumsum(0)
    return Collated(torch.cat(pieces).view(rows, row_len), offsets, capacity, 0)


class Collation(Strategy):
    """A DATA strategy that forms batches; the input workload calls `collate` on the data rank."""

    aspect = Aspect.DATA
    order = 0  # collate, then choose the wire dtype (ids_int32)
    workloads = frozenset({"input"})
    exclusive = COLLATION

    def apply(self, state: TrialState) -> None:
        state.collation = self

    def collate(self, stream: DocStream, rows: int, row_len: int, pad_id: int) -> Collated:
        raise NotImplementedError

    def static_layout(self, rows: int, row_len: int) -> InputLayout | None:
        """The layout every batch has, known to receivers without a header; None: it changes per batch,
        so the data rank broadcasts `header_value` first."""
        return None

    def layout_from_header(self, header: int, rows: int, row_len: int) -> InputLayout:
        """The batch's layout given the header value the data rank broadcast."""
        raise NotImplementedError

    def header_value(self, batch: Collated) -> int:
        raise NotImplementedError

    def modelled_layouts(self, read_lengths: list[int], rows: int, row_len: int, steps: int) -> list[InputLayout]:
        """The cost model: each batch's layout from the lengths of the documents read, in order."""
        raise NotImplementedError


@STRATEGIES.register("pad_max")
class PadMax(Collation):
    """One document per row, padded to `seq_len`: the fixed-shape batch of a plain collator."""

    name = "pad_max"
    summary = "input: one document per row, truncated and padded to seq_len (the implicit default): a fixed shape, no header"
    implicit = True

    def collate(self, stream: DocStream, rows: int, row_len: int, pad_id: int) -> Collated:
        return pad_rows([stream.next() for _ in range(rows)], row_len, pad_id)

    def static_layout(self, rows: int, row_len: int) -> InputLayout | None:
        return InputLayout(rows=rows, cols=row_len, aux=rows)

    def modelled_layouts(self, read_lengths: list[int], rows: int, row_len: int, steps: int) -> list[InputLayout]:
        return [padded_shape(read_lengths[i * rows : (i + 1) * rows], row_len, dynamic=False) for i in range(steps)]


@STRATEGIES.register("pad_dynamic")
class PadDynamic(Collation):
    """One document per row, padded to the longest in the batch (Hugging Face's `DataCollatorWithPadding`)."""

    name = "pad_dynamic"
    summary = "input: one document per row, padded to the batch's longest (at most seq_len); the width goes first in an int64 header"

    def collate(self, stream: DocStream, rows: int, row_len: int, pad_id: int) -> Collated:
        docs = [stream.next() for _ in range(rows)]
        return pad_rows(docs, min(row_len, max(d.numel() for d in docs)), pad_id)

    def header_value(self, batch: Collated) -> int:
        return batch.layout.cols

    def layout_from_header(self, header: int, rows: int, row_len: int) -> InputLayout:
        return InputLayout(rows=rows, cols=header, aux=rows)

    def modelled_layouts(self, read_lengths: list[int], rows: int, row_len: int, steps: int) -> list[InputLayout]:
        return [padded_shape(read_lengths[i * rows : (i + 1) * rows], row_len, dynamic=True) for i in range(steps)]


@STRATEGIES.register("pack")
class Pack(Collation):
    """Sequence packing: documents end to end, split across batches, delimited by cu_seqlens; no padding."""

    name = "pack"
    summary = "input: documents end to end over batch_size x seq_len slots (no padding), boundaries as cu_seqlens; their count goes first in an int64 header"

    def collate(self, stream: DocStream, rows: int, row_len: int, pad_id: int) -> Collated:
        return pack_rows(stream, rows, row_len)

    def header_value(self, batch: Collated) -> int:
        return batch.layout.aux

    def layout_from_header(self, header: int, rows: int, row_len: int) -> InputLayout:
        return InputLayout(rows=rows, cols=row_len, aux=header)

    def modelled_layouts(self, read_lengths: list[int], rows: int, row_len: int, steps: int) -> list[InputLayout]:
        pieces = packed_pieces(read_lengths, rows * row_len, steps)
        return [InputLayout(rows=rows, cols=row_len, aux=k + 1) for k in pieces]


@STRATEGIES.register("ids_int32")
class IdsInt32(Strategy):
    """Token ids (and row lengths or offsets) on the wire as int32, not int64: any vocabulary under 2^31 fits."""

    name = "ids_int32"
    summary = "input: token ids, lengths and offsets broadcast as int32 instead of int64 (half the bytes; the header stays int64)"
    aspect = Aspect.DATA
    order = 10
    workloads = frozenset({"input"})

    def apply(self, state: TrialState) -> None:
        if state.spec.vocab_size > torch.iinfo(torch.int32).max:
            raise ValueError(f"{state.spec.name}'s vocabulary of {state.spec.vocab_size} does not fit int32")
        state.id_dtype = torch.int32

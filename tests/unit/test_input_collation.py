"""The input pipeline's collations against hand counts, and the cost model of what they send."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from bench.comm.cost_model import InputLayout, input_broadcast_bytes, packed_pieces, padded_shape
from bench.errors import BenchError
from bench.strategies import effective, parse
from bench.strategies.collation import DocStream, Pack, PadDynamic, PadMax
from bench.workloads.input import corpus_documents, synthetic_documents

PAD = 99


def docs(*lengths: int) -> DocStream:
    """Documents whose ids are 1, 2, ... in order across documents, so every id is traceable."""
    counter = itertools.count(1)
    return DocStream(iter([torch.tensor([next(counter) for _ in range(n)]) for n in lengths]))


def test_pad_max_pads_every_row_to_seq_len_and_truncates_longer_documents() -> None:
    stream = docs(3, 5, 1, 8)
    first = PadMax(PadMax.Params()).collate(stream, rows=2, row_len=6, pad_id=PAD)
    assert first.ids.tolist() == [[1, 2, 3, PAD, PAD, PAD], [4, 5, 6, 7, 8, PAD]]
    assert first.aux.tolist() == [3, 5] and (first.real_tokens, first.padded_tokens, first.truncated_tokens) == (8, 4, 0)
    second = PadMax(PadMax.Params()).collate(stream, rows=2, row_len=6, pad_id=PAD)
    assert second.ids.tolist() == [[9, PAD, PAD, PAD, PAD, PAD], [10, 11, 12, 13, 14, 15]]
    assert (second.real_tokens, second.padded_tokens, second.truncated_tokens) == (7, 5, 2)
    # By hand: 24 slots, 4 + 5 of them padding.
    assert (first.padded_tokens + second.padded_tokens) / 24 == 9 / 24
    assert stream.read_lengths == [3, 5, 1, 8]


def test_pad_dynamic_pads_to_the_batch_longest_only() -> None:
    stream = docs(3, 5, 1, 8)
    a = PadDynamic(PadDynamic.Params()).collate(stream, rows=2, row_len=6, pad_id=PAD)
    b = PadDynamic(PadDynamic.Params()).collate(stream, rows=2, row_len=6, pad_id=PAD)
    assert a.ids.tolist() == [[1, 2, 3, PAD, PAD], [4, 5, 6, 7, 8]]
    assert b.ids.shape == (2, 6) and b.truncated_tokens == 2  # the 8-token document still stops at seq_len
    # By hand: 10 + 12 slots, 2 + 5 of them padding.
    assert (a.padded_tokens, b.padded_tokens) == (2, 5)


def test_pack_fills_every_slot_and_carries_the_overflow_into_the_next_batch() -> None:
    stream = docs(3, 5, 1, 8)
    pack = Pack(Pack.Params())
    a = pack.collate(stream, rows=2, row_len=3, pad_id=PAD)
    assert a.ids.tolist() == [[1, 2, 3], [4, 5, 6]] and a.aux.tolist() == [0, 3, 6]  # the 5-token doc split 3 | 2
    b = pack.collate(stream, rows=2, row_len=3, pad_id=PAD)
    assert b.ids.tolist() == [[7, 8, 9], [10, 11, 12]] and b.aux.tolist() == [0, 2, 3, 6]
    assert a.padded_tokens == b.padded_tokens == 0 and a.truncated_tokens == 0
    assert stream.read_lengths == [3, 5, 1, 8]  # the remainder pushed back is not a new read


def test_collation_layouts_match_the_cost_model_on_a_long_stream() -> None:
    lengths = [int(n) for n in torch.randint(1, 40, (400,), generator=torch.Generator().manual_seed(3))]
    for strategy, rows, row_len in ((PadMax, 4, 16), (PadDynamic, 4, 16), (Pack, 3, 10)):
        coll = strategy(strategy.Params())
        stream = docs(*lengths)
        got = [coll.collate(stream, rows, row_len, PAD).layout for _ in range(50)]
        assert got == coll.modelled_layouts(stream.read_lengths, rows, row_len, 50), strategy.name


def test_cost_model_pieces_and_bytes_by_hand() -> None:
    assert packed_pieces([3, 5, 1, 8], capacity=6, steps=2) == [2, 3]
    assert padded_shape([3, 5], 6, dynamic=True) == InputLayout(rows=2, cols=5, aux=2)
    assert padded_shape([3, 9], 6, dynamic=True) == InputLayout(rows=2, cols=6, aux=2)
    assert padded_shape([3, 5], 6, dynamic=False) == InputLayout(rows=2, cols=6, aux=2)
    # 2 x 6 ids + 2 lengths, int32, no header; then with an int64 header.
    assert input_broadcast_bytes(InputLayout(rows=2, cols=6, aux=2), 4, 0) == 56
    assert input_broadcast_bytes(InputLayout(rows=2, cols=6, aux=2), 8, 8) == 120


def test_pad_max_is_the_implicit_input_collation_and_collations_are_exclusive() -> None:
    assert [s.name for s in effective(parse("baseline"), "input").strategies] == ["pad_max"]
    assert [s.name for s in effective(parse("pack+ids_int32"), "input").strategies] == ["pack", "ids_int32"]
    assert parse("pad_max").canonical == "baseline"
    with pytest.raises(BenchError, match="pack and pad_dynamic are both collations"):
        parse("pack+pad_dynamic")
    with pytest.raises(BenchError, match="pack \\(data\\) must come before ids_int32"):
        parse("ids_int32+pack")
    with pytest.raises(BenchError, match="ids_int32 \\(data\\) must come before fp16_compress \\(comm\\)"):
        parse("fp16_compress+ids_int32")


def test_corpus_lines_become_word_id_documents_ending_in_the_end_id(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_text(" = Title = \n\nsome words here\n")
    got = corpus_documents(path, vocab=100)
    assert [d.numel() for d in got] == [4, 4]  # 3 words + end id; the blank line is no document
    assert all(int(d[-1]) == 99 and bool((d[:-1] < 99).all()) for d in got)
    assert got[0][0] == got[0][2]  # "=" twice: one word, one id


def test_synthetic_documents_are_seeded_and_never_empty() -> None:
    a = list(itertools.islice(synthetic_documents(7, 32.0, 1000), 200))
    b = list(itertools.islice(synthetic_documents(7, 32.0, 1000), 200))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    lengths = torch.tensor([d.numel() for d in a], dtype=torch.float64)
    assert lengths.min() >= 1 and 20 < float(lengths.mean()) < 45  # 1 + floor(Exp(32)): mean ~32.5
    assert all(int(d[-1]) == 999 for d in a)

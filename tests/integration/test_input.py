"""The input workload on 2 gloo ranks: broadcast bytes against the cost model, padding against a hand count."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd
import pytest

from bench.eval.corpus import Corpus, find
from bench.models.zoo import MODELS
from bench.runner import suite as suites
from bench.runner.sweep import run_sweep
from bench.storage.parquet import read_comm, read_results
from bench.workloads.input import synthetic_documents
from bench.workloads.sources import stream_seed

pytestmark = pytest.mark.multirank

ROWS, ROW_LEN, STEPS, WARMUP = 4, 32, 4, 2
STRATEGIES = ["baseline", "pad_dynamic", "pack+ids_int32"]  # 3 launches cover every collation and both id dtypes


def suite(name: str, strategies: list[str], source: str) -> str:
    return f"""
name = "{name}"
[matrix]
strategies = {json.dumps(strategies)}
models = ["gpt2-tiny"]
workloads = ["input"]
world_sizes = [2]
[settings]
steps = {STEPS}
warmup_steps = {WARMUP}
batch_size = {ROWS}
seq_len = {ROW_LEN}
profile_steps = 0
timeout_s = 240
[settings.options]
source = "{source}"
"""


def sweep(root: Path, name: str, strategies: list[str], source: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    path = root / f"{name}.toml"
    path.write_text(suite(name, strategies, source))
    outcome = run_sweep(suites.load(str(path)), root / "results", progress=False)
    df = read_results([root / "results" / name])
    assert outcome.counts == {"ok": len(strategies)}, df[["strategy", "error"]]
    return df.set_index("strategy"), read_comm([root / "results" / name])


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    return sweep(tmp_path_factory.mktemp("input"), "inputtest", STRATEGIES, "synthetic")


@pytest.fixture(scope="module")
def synthetic(swept: tuple[pd.DataFrame, pd.DataFrame]) -> pd.DataFrame:
    return swept[0]


def measured_documents() -> list[list[int]]:
    """The synthetic documents' lengths, batch by batch, for the measured steps (seed 0, data.seed 1234)."""
    vocab = MODELS.get("gpt2-tiny").vocab_size
    docs = synthetic_documents(stream_seed(1234, 0, "input"), ROW_LEN / 2, vocab)
    lengths = [d.numel() for d in itertools.islice(docs, (WARMUP + STEPS) * ROWS)]
    return [lengths[i * ROWS : (i + 1) * ROWS] for i in range(WARMUP, WARMUP + STEPS)]


def test_broadcast_bytes_equal_the_cost_model_on_every_rank(synthetic: pd.DataFrame) -> None:
    for strategy, row in synthetic.iterrows():
        model = row.analytic_logical_bytes_per_step_per_rank
        assert list(row.comm_logical_bytes_per_step_per_rank) == [model, model], strategy
        assert row.input_bytes_per_step == model, strategy
        assert "synthetic" in json.loads(row.metrics)["input_source"]


def test_wire_dtypes_and_the_fixed_shape_batch_by_hand(swept: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    df, comm = swept
    # pad_max sends no header: 4 x 32 int64 ids + 4 int64 lengths, one broadcast a step.
    assert df.loc["baseline", "input_bytes_per_step"] == (ROWS * ROW_LEN + ROWS) * 8
    assert df.loc["baseline", "comm_calls_per_step"] == 1
    # ids_int32 sends ids and cu_seqlens as int32 (4 B each), after an 8-byte int64 header.
    ops = comm[(comm.trial_id == df.loc["pack+ids_int32", "trial_id"]) & (comm["rank"] == 0)].set_index("dtype")
    assert set(ops.index) == {"int64", "int32"} and ops.loc["int64", "msg_bytes"] == 8 * STEPS
    assert ops.loc["int32", "msg_bytes"] % 4 == 0 and ops.loc["int32", "numel"] * 4 == ops.loc["int32", "msg_bytes"]
    assert ops.loc["int32", "numel"] > STEPS * ROWS * ROW_LEN  # every slot, plus the offsets


def test_padded_fraction_is_the_hand_count(synthetic: pd.DataFrame) -> None:
    batches = measured_documents()
    real = sum(min(n, ROW_LEN) for batch in batches for n in batch)
    pad_max = 1 - real / (STEPS * ROWS * ROW_LEN)
    dynamic_slots = sum(ROWS * min(ROW_LEN, max(batch)) for batch in batches)
    assert synthetic.loc["baseline", "padded_token_fraction"] == pytest.approx(pad_max, abs=1e-12)
    assert synthetic.loc["pad_dynamic", "padded_token_fraction"] == pytest.approx(1 - real / dynamic_slots, abs=1e-12)
    assert synthetic.loc["baseline", "input_tokens_per_step"] == real / STEPS
    pack = synthetic.loc["pack+ids_int32"]
    assert pack.padded_token_fraction == 0 and pack.input_tokens_per_step == ROWS * ROW_LEN
    assert 0 < pad_max and 1 - real / dynamic_slots < pad_max  # the source has short documents to pad


LOCAL = find(None)


@pytest.mark.corpus
@pytest.mark.skipif(not isinstance(LOCAL, Corpus), reason=f"no corpus: {LOCAL}")
def test_the_corpus_source_reads_wikitext(tmp_path: Path) -> None:
    row = sweep(tmp_path, "inputcorpus", ["pad_dynamic"], "corpus")[0].loc["pad_dynamic"]
    assert isinstance(LOCAL, Corpus) and str(LOCAL.path) in json.loads(row.metrics)["input_source"]
    assert list(row.comm_logical_bytes_per_step_per_rank) == [row.analytic_logical_bytes_per_step_per_rank] * 2
    assert 0 < row.padded_token_fraction < 1

"""The advisor's model state per rank equals what the partition layouts measure (`model_state_bytes_per_rank`)."""

from __future__ import annotations

import pandas as pd
import pytest

from bench.predict.advise import TECHNIQUES
from bench.predict.memory import model_state_bytes
from bench.predict.shapes import ZOO
from bench.runner import suite as suites
from bench.runner.sweep import run_sweep
from bench.storage.parquet import read_results
from bench.strategies import parse

pytestmark = pytest.mark.multirank

STRATEGIES = ["baseline", "fsdp", "fsdp(reshard_after_forward=false)"]  # the advisor's DDP and ZeRO-3 layouts
SUITE = f"""name = "partition"
[matrix]
strategies = {STRATEGIES!r}
models = ["gpt2-tiny", "llama-tiny"]
workloads = ["train"]
world_sizes = [2]
[settings]
steps = 1
warmup_steps = 1
batch_size = 2
seq_len = 16
eval_batches = 1
gen_tokens = 0
profile_steps = 0
timeout_s = 300
"""


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("predict_memory")
    (root / "partition.toml").write_text(SUITE)
    outcome = run_sweep(suites.load(str(root / "partition.toml")), root / "results", progress=False)
    df = read_results([root / "results" / "partition"])
    assert outcome.counts == {"ok": 2 * len(STRATEGIES)}, df[["strategy", "error"]].to_string()
    return df


def test_advisor_model_state_equals_the_measured_rows(swept: pd.DataFrame) -> None:
    layouts = {parse(t.name).canonical: t.layout for t in TECHNIQUES if t.name in STRATEGIES}
    assert len(layouts) == len(STRATEGIES)
    for _, row in swept.iterrows():
        n = int(row.world_size)
        predicted = model_state_bytes(ZOO[row.model], layouts[row.strategy], n)
        assert list(row.model_state_bytes_per_rank) == [predicted] * n, (row.model, row.strategy)

"""Suite files: expansion, validation errors, overrides, excludes and pre-launch skips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.errors import BenchError
from bench.runner import suite as suites


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(text)
    return p


MINIMAL = """
name = "t"
[matrix]
strategies = ["baseline", "fp16_compress"]
models = ["gpt2-tiny"]
workloads = ["train", "infer"]
world_sizes = [1, 2]
[settings]
steps = 3
"""


def test_default_suite_expands_to_the_documented_matrix() -> None:
    s = suites.load("default")
    assert len(s.trials) == 12
    assert {t.config.model for t in s.trials} == {"gpt2-tiny", "bert-tiny"}
    assert {t.config.world_size for t in s.trials} == {1, 2}
    # Every trial measures something: fp16 gradient compression x infer, skipped by design, is excluded.
    assert not [t for t in s.trials if t.skip]
    pairs = {(t.config.strategy, t.config.workload) for t in s.trials}
    assert pairs == {("baseline", "train"), ("baseline", "infer"), ("fp16_compress", "train")}


def test_a_strategy_that_does_not_apply_to_a_workload_is_skipped_with_a_reason(tmp_path: Path) -> None:
    s = suites.load(str(write(tmp_path, MINIMAL)))
    skipped = [t for t in s.trials if t.skip]
    assert skipped and all(t.config.strategy == "fp16_compress" and t.config.workload == "infer" for t in skipped)
    assert all("does not apply to the infer workload" in (t.skip or "") for t in skipped)


def test_compression_suite_pairs_infer_with_one_rank_and_transfer_with_two() -> None:
    s = suites.load("compression")
    assert len(s.trials) == 48  # 12 strategies x 2 models x (infer at 1 rank + transfer at 2)
    assert {(t.config.workload, t.config.world_size) for t in s.trials} == {("infer", 1), ("transfer", 2)}
    assert {t.config.model for t in s.trials} == {"smollm2-135m", "minilm-l6"}
    assert "prune_l1+quant_int8_wo" in {t.config.strategy for t in s.trials}
    infer = [t.config for t in s.trials if t.config.workload == "infer"]
    assert all(c.options["max_tokens"] >= 16384 and c.batch_size == 1 and c.seq_len == 128 for c in infer)


def test_seed_bert_suite_trains_bert_and_compresses_minilm() -> None:
    s = suites.load("seed_bert")
    train = [t.config for t in s.trials if t.config.workload == "train"]
    assert [(c.strategy, c.model, c.world_size) for c in train] == [("baseline", "bert-small", 2)]
    rest = [t for t in s.trials if t.config.workload != "train"]
    assert len(rest) == 16 and {t.config.model for t in rest} == {"minilm-l6"}
    assert {"prune_l1(amount=0.7)", "prune_l1(amount=0.7)+quant_dynamic_int8"} <= {t.config.strategy for t in rest}


def test_expansion_settings_and_ids(tmp_path: Path) -> None:
    s = suites.load(str(write(tmp_path, MINIMAL)))
    assert len(s.trials) == 8 and all(t.config.steps == 3 for t in s.trials)
    assert len({t.config.trial_id for t in s.trials}) == 8


def test_override_and_exclude(tmp_path: Path) -> None:
    text = MINIMAL + """
[[override]]
match = { world_size = 2 }
batch_size = 2
[settings.data]
states = 64
[[exclude]]
workload = "infer"
"""
    s = suites.load(str(write(tmp_path, text)))
    assert {t.config.workload for t in s.trials} == {"train"}
    assert {(t.config.world_size, t.config.batch_size) for t in s.trials} == {(1, 8), (2, 2)}
    assert all(t.config.data.states == 64 for t in s.trials)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name = 't'\n[matrix\n", "malformed suite file"),
        ("name='t'\nbogus=1\n[matrix]\nstrategies=['baseline']\nmodels=['gpt2-tiny']", "unknown top-level key"),
        ("name='t'\n[matrix]\nstrategies=['nope']\nmodels=['gpt2-tiny']", "unknown strategy 'nope'; known: "),
        ("name='t'\n[matrix]\nstrategies=['baseline']\nmodels=['gpt9']", "unknown model 'gpt9'; known: "),
        ("name='t'\n[matrix]\nstrategies=['baseline']\nmodels=['gpt2-tiny']\nworkloads=['fly']", "unknown workload"),
        ("name='t'\n[matrix]\nstrategies=[]\nmodels=['gpt2-tiny']", "matrix.strategies must be a non-empty list"),
        ("name='t'\n[matrix]\nstrategies=['baseline']\nmodels=['gpt2-tiny']\n[settings]\nsteps='x'", "settings.steps: expected an integer"),
        ("name='t'\n[matrix]\nstrategies=['baseline']\nmodels=['gpt2-tiny']\n[settings]\nseq_len=999", "exceeds gpt2-tiny's 256 positions"),
        ("name='t'\n[matrix]\nstrategies=['baseline']\nmodels=['gpt2-tiny']\nworld_sizes=[0]", "world_size must be >= 1"),
        ("name='t'\n[matrix]\nstrategies=['baseline']\nmodels=['gpt2-tiny']\nworld_sizes=[512]", "not a local world size"),
        ("name='t'\n[matrix]\nstrategies=['baseline']\nmodels=['gpt2-tiny']\n[settings]\nworld_size=2", "is a matrix axis"),
        ("name='t'\n[matrix]\nstrategies=['baseline']\nmodels=['gpt2-tiny']\n[settings.data]\nstates=9000", "needs a vocab"),
    ],
)
def test_bad_suites_raise_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(BenchError, match=message):
        suites.load(str(write(tmp_path, text)))


def test_missing_suite_file() -> None:
    with pytest.raises(BenchError, match="no suite file"):
        suites.load("does-not-exist")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_cuda_trials_are_skipped_with_a_reason_on_a_cpu_machine(tmp_path: Path) -> None:
    text = MINIMAL.replace('world_sizes = [1, 2]', 'world_sizes = [1]\ndevices = ["cpu", "cuda"]')
    s = suites.load(str(write(tmp_path, text)))
    cuda = [t for t in s.trials if t.config.device == "cuda"]
    assert cuda and all(t.skip == "CUDA is not available on this machine" for t in cuda)

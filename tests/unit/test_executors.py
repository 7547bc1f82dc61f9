"""Executor options are checked before anything runs: a bad key is one `commbench: error:` line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import main
from bench.errors import BenchError
from bench.runner.executors import LocalExecutor, SubmititExecutor, make, parse_options


def test_options_are_typed_like_toml_values() -> None:
    assert parse_options(["time=60", "partition=gpu", "visible_gpus=[0, 1]", "x=1.5"]) == {
        "time": 60, "partition": "gpu", "visible_gpus": [0, 1], "x": 1.5,
    }  # fmt: skip
    with pytest.raises(BenchError, match="expected key=value"):
        parse_options(["partition"])


def test_each_executor_accepts_its_own_keys_only() -> None:
    assert isinstance(make("local", []), LocalExecutor)
    local = make("submitit-local", ["timeout_min=30"])
    assert isinstance(local, SubmititExecutor) and local.options == {"timeout_min": 30}
    with pytest.raises(BenchError, match="local executor takes no"):
        make("local", ["partition=gpu"])
    with pytest.raises(BenchError, match=r"unknown --executor-opt for submitit-local: partition; valid: .*timeout_min"):
        make("submitit-local", ["partition=gpu"])
    with pytest.raises(BenchError, match=r"unknown --executor-opt for slurm: bogus; valid: .*partition"):
        make("slurm", ["bogus=1", "partition=gpu"])  # checked before looking for sbatch


def test_slurm_parameters_default_to_one_task_with_the_trials_time_and_gpus() -> None:
    from bench.contracts import TrialConfig

    ex = SubmititExecutor("slurm", {"partition": "gpu", "time": 30})
    cfg = TrialConfig(
        suite="s", strategy="baseline", model="gpt2-tiny", workload="train", device="cuda", world_size=4, timeout_s=600
    )
    params = ex._parameters(cfg)
    assert params["gpus_per_node"] == 4 and params["nodes"] == 1 and params["ntasks_per_node"] == 1
    assert (params["partition"], params["time"]) == ("gpu", 30)  # the user's options win
    assert SubmititExecutor("slurm", {})._parameters(cfg)["time"] == 10 + 5  # timeout_s in minutes + margin


def test_cli_rejects_an_unknown_executor_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = tmp_path / "s.toml"
    suite.write_text('[matrix]\nstrategies = ["baseline"]\nmodels = ["gpt2-tiny"]\n')
    argv = ["sweep", str(suite), "--results", str(tmp_path), "--executor", "submitit-local", "--executor-opt", "bogus=1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("commbench: error: unknown --executor-opt for submitit-local: bogus")
    assert not list(tmp_path.glob("*/*.parquet"))  # nothing ran

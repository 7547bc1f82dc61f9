"""CLI behaviour on bad input: one clear error line, exit code 2, nothing lost."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import _parse_sets, main

REPO = Path(__file__).resolve().parents[2]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--strategy", "warp_drive"], "unknown strategy 'warp_drive'; known: "),
        (["run", "--model", "gpt5"], "unknown model 'gpt5'; known: "),
        (["run", "--workload", "dance"], "unknown workload 'dance'; known: "),
        (["run", "--world-size", "0"], "world_size must be >= 1"),
        (["run", "--world-size", "100"], "world_size 100 is not a local world size"),
        (["run", "--device", "tpu"], "device must be one of cpu, cuda"),
        (["run", "--strategy", "fp16_compress(rank=2)"], "unknown parameter(s) rank"),
        (["run", "--set", "data.states=1"], "data.states must be >= 2"),
        (["run", "--set", "nonsense"], "expected key=value"),
        (["run", "--set", "pin=threads"], "pin: 'threads' is not one of 'compute', 'all', 'none'"),
        (["sweep", "no-such-suite"], "no suite file 'no-such-suite'"),
        (["report", "/nonexistent/results"], "no such results file or directory"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("commbench: error: ")
    assert message in err


def test_malformed_suite_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[matrix\nstrategies = [")
    code, _, err = run_cli(capsys, "sweep", str(bad))
    assert code == 2 and "malformed suite file" in err and err.count("\n") == 1


def test_corrupt_results_file_is_reported_and_kept(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "run.parquet"
    bad.write_bytes(b"garbage")
    code, _, err = run_cli(capsys, "report", str(tmp_path), "--out", str(tmp_path / "r.html"))
    assert code == 2 and "corrupt results file" in err and err.count("\n") == 1
    assert bad.read_bytes() == b"garbage" and not (tmp_path / "r.html").exists()


def test_dry_run_lists_trials(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run_cli(capsys, "sweep", "default", "--dry-run", "--results", str(tmp_path))
    assert code == 0
    assert "12 trials: 12 to run, 0 already done, 0 skipped" in out


def test_list_names_everything(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for name in ("baseline", "fp16_compress", "gpt2-tiny", "bert-tiny", "llama-1b", "train", "infer", "default"):
        assert name in out


def test_module_entry_point_and_console_script() -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "--help"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0
    for cmd in ("list", "run", "sweep", "report"):
        assert cmd in done.stdout
    done = subprocess.run([sys.executable, "-m", "bench", "run", "--model", "nope"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [done.stderr.strip()]


def test_set_reads_option_values_as_toml_literals_and_leaves_typed_fields_raw() -> None:
    got = _parse_sets(["options.size_bytes=1048576", "options.op=all_gather", "options.flag=true", "lr=3e-3", "data.states=64"])
    assert got == {"options": {"size_bytes": 1048576, "op": "all_gather", "flag": True}, "lr": "3e-3", "data": {"states": "64"}}


# Bad option values per workload, as data: (workload, --set, text the one error line must hold).
BAD_OPTION_VALUES = [
    ("train", "options.optimizer=lamb", "options.optimizer: 'lamb' is not one of 'adamw', 'sgd'"),
    ("train", "options.momentum=1.5", "momentum must be in [0, 1)"),
    ("infer", "options.window=1", "window must be >= 2"),
    ("infer", "options.stride=0", "stride must be in [1, window=512]"),
    ("infer", "options.max_tokens='many'", "options.max_tokens: expected an integer"),
    ("collectives", "options.op=all_scatter", "options.op: 'all_scatter' is not one of"),
    ("collectives", "options.size_bytes=-1", "size_bytes must be a positive integer"),
    ("input", "options.source=disk", "options.source: 'disk' is not one of 'auto', 'corpus', 'synthetic'"),
]


def _workloads() -> list[str]:
    from bench.workloads import WORKLOADS

    return WORKLOADS.names()


@pytest.mark.parametrize("workload", _workloads())
def test_an_unknown_option_key_names_it_and_the_valid_ones(capsys: pytest.CaptureFixture[str], workload: str) -> None:
    from bench.workloads import WORKLOADS

    for key in ("strid", "max_token", "optimzer"):  # typos users make
        code, _, err = run_cli(capsys, "run", "--workload", workload, "--set", f"options.{key}=1")
        assert code == 2 and err.count("\n") == 1 and err.startswith("commbench: error: ")
        valid = [f.name for f in dataclasses.fields(WORKLOADS.get(workload).options_type)]
        assert f"options.{key} for the {workload} workload; valid: {', '.join(valid) or '(none)'}" in err


@pytest.mark.parametrize(("workload", "setting", "message"), BAD_OPTION_VALUES)
def test_a_bad_option_value_names_the_key(capsys: pytest.CaptureFixture[str], workload: str, setting: str, message: str) -> None:
    code, _, err = run_cli(capsys, "run", "--workload", workload, "--set", setting)
    assert code == 2 and err.count("\n") == 1 and err.startswith("commbench: error: ")
    assert message in err


def test_every_workload_with_options_has_a_bad_value_case() -> None:
    from bench.workloads import WORKLOADS

    with_options = {w for w in _workloads() if dataclasses.fields(WORKLOADS.get(w).options_type)}
    assert with_options == {w for w, _, _ in BAD_OPTION_VALUES}


def test_options_in_a_suite_file_are_checked_before_anything_launches(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    suite = tmp_path / "typo.toml"
    suite.write_text('[matrix]\nstrategies = ["baseline"]\nmodels = ["gpt2-tiny"]\nworkloads = ["infer"]\n[settings.options]\nstrid = 128\n')
    code, _, err = run_cli(capsys, "sweep", str(suite), "--results", str(tmp_path / "results"))
    assert code == 2 and "options.strid for the infer workload" in err and err.count("\n") == 1
    assert not (tmp_path / "results").exists()

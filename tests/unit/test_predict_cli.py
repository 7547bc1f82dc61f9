"""`commbench advise` and `commbench predict` on the command line: a ranked table without launching, and one error line on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import main

ADVISE = ["advise", "--model", "llama-7b", "--nodes", "8", "--gpus-per-node", "8", "--link", "100gbit", "--mem", "80GB", "--latency", "5us"]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_advise_prints_a_ranked_table_marked_predicted(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = _run(capsys, *ADVISE, "--html", str(tmp_path / "advise.html"))
    assert code == 0, err
    lines = out.splitlines()
    ranked = [ln for ln in lines if ln[:2].strip().isdigit()]
    assert len(ranked) == 9 and ranked[0].split()[0] == "1"
    assert all(" NO " in ln for ln in ranked if ln.split()[2] == "DDP")  # 108 GB of model state per GPU > 80 GB
    assert "predicted" in out and "not measured" in out
    assert "(predicted)" in (tmp_path / "advise.html").read_text()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--model": "gpt5"}, "unknown model 'gpt5'; known: "),
        ({"--link": "warp9"}, "network 'warp9': expected"),
        ({"--mem": "80 bananas"}, "memory '80 bananas'"),
        ({"--mem": "10MB"}, "no layout fits llama-7b in 0.01 GB"),
        ({"--nodes": "0"}, "advise: nodes, gpus per node"),
        ({"--latency": "fast"}, "--latency 'fast': expected a time"),
    ],
)
def test_advise_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], change: dict[str, str], message: str
) -> None:
    argv = list(ADVISE)
    for flag, value in change.items():
        argv[argv.index(flag) + 1] = value
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("commbench: error: ") and message in err, err


def test_predict_without_results_is_one_error_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _run(capsys, "predict", str(tmp_path))
    assert code == 2 and err.startswith("commbench: error: ") and err.count("\n") == 1, err


def test_predict_refuses_a_holdout_of_another_axis(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _run(capsys, "predict", str(tmp_path), "--holdout", "model=gpt2")
    assert code == 2 and "only network=LINK" in err, err


@pytest.mark.parametrize(("flag", "value"), [("--compute", "guessed"), ("--overlap", "assumed")])
def test_predict_refuses_an_unknown_way(capsys: pytest.CaptureFixture[str], tmp_path: Path, flag: str, value: str) -> None:
    code, _, err = _run(capsys, "predict", str(tmp_path), flag, value)
    assert code == 2 and err.count("\n") == 1 and f"{flag} {value!r}: unknown (known: " in err, err


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "advise.toml"
    path.write_text(text)
    return str(path)


CONFIG = 'model = "llama-7b"\nnodes = 8\ngpus_per_node = 8\nlink = "100gbit"\nmem = "80GB"\nlatency = "5us"\n'


def test_advise_from_a_config_file_equals_the_flags(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _, by_flags, _ = _run(capsys, *ADVISE)
    code, by_file, err = _run(capsys, "advise", "--config", _config(tmp_path, CONFIG))
    assert code == 0, err
    assert by_file == by_flags


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (CONFIG + "gpus = 8\n", "unknown key 'gpus'; known: model, nodes"),
        (CONFIG.replace('mem = "80GB"\n', ""), "missing 'mem'"),
        (CONFIG.replace("nodes = 8", 'nodes = "8"'), "nodes = '8' is not an integer"),
        (CONFIG + "tflops = true\n", "tflops = True is not a number"),
        ("model = [", "not valid TOML"),
    ],
)
def test_a_bad_config_file_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, message: str
) -> None:
    code, out, err = _run(capsys, "advise", "--config", _config(tmp_path, text))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("commbench: error: advise config ") and message in err, err


def test_a_config_file_and_cluster_flags_together_are_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _run(capsys, "advise", "--config", _config(tmp_path, CONFIG), "--nodes", "4")
    assert code == 2 and "not both (got --nodes)" in err, err


def test_advise_without_a_model_names_what_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "advise", "--nodes", "2", "--link", "10gbe", "--mem", "80GB")
    assert code == 2 and "advise: missing 'model'" in err, err


def test_accuracy_is_matched_on_the_options_and_other_options_are_named() -> None:
    import dataclasses

    from bench.predict.present import advised
    from bench.predict.request import AdviseRequest

    answer = advised(AdviseRequest(model="llama-7b", nodes=8, gpus_per_node=8, link="100gbit", mem="80GB"), [])
    answer = dataclasses.replace(answer, accuracy={"topk(ratio=0.01)": "+0.005 nats", "powersgd(rank=1)": "+1.1 nats"})
    by = {a.technique.name: answer.accuracy_of(a) for a in answer.advice}
    assert by["topk(ratio=0.01)"] == "+0.005 nats"  # the advised options, measured: no "as"
    assert by["powersgd(rank=4)"] == "as powersgd(rank=1): +1.1 nats"  # measured only with other options: named
    assert by["signsgd"] == "not measured"

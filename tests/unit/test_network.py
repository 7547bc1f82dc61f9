"""The network axis without namespaces: link names, placement options, break-even arithmetic, link columns."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.config import canonical_json
from bench.contracts import TrialConfig
from bench.distributed.launch import ungather
from bench.errors import BenchError
from bench.network.netns import TCP_HEADER_BYTES, qdisc_args
from bench.network.spec import parse_network
from bench.reports import network
from bench.runner import suite as suites
from bench.storage.parquet import read_results
from tests.unit.report_fixtures import NETWORK_BYTES, NETWORK_COMPUTE_S, T0, Run, network_trials


@pytest.mark.parametrize(
    ("name", "rate", "delay"),
    [
        ("veth", None, None),
        ("1gbit", 1e9, None),
        ("100mbit+5ms", 1e8, 5e-3),
        ("2.5gbit+200us", 2.5e9, 2e-4),
        ("64kbit", 64e3, None),
    ],
)
def test_network_names_parse(name: str, rate: float | None, delay: float | None) -> None:
    spec = parse_network(name)
    assert spec.rate_bps == rate and spec.delay_s == (pytest.approx(delay) if delay else None)


@pytest.mark.parametrize("name", ["loopback", "1 gbit", "100mbps", "1gbit+", "1gbit+5", "+5ms", "0mbit", "1Gbit", ""])
def test_malformed_network_names_are_user_errors(name: str) -> None:
    with pytest.raises(BenchError, match="network"):
        parse_network(name)


def test_qdisc_is_tbf_for_a_rate_and_netem_for_a_delay() -> None:
    tbf = qdisc_args(parse_network("100mbit"), "cbv0")
    assert tbf[:6] == ["qdisc", "add", "dev", "cbv0", "root", "tbf"] and tbf[tbf.index("rate") + 1] == "100000000bit"
    assert int(tbf[tbf.index("burst") + 1]) >= 65536  # one GSO segment must fit in the bucket
    netem = qdisc_args(parse_network("1gbit+5ms"), "cbv1")
    assert "netem" in netem and netem[netem.index("delay") + 1] == "5000us" and netem[netem.index("rate") + 1] == "1000000000bit"


SUITE = """
name = "n"
[matrix]
strategies = ["baseline", "fp16_compress"]
models = ["gpt2-tiny"]
world_sizes = [2]
networks = {networks}
[settings]
nnodes = {nnodes}
"""


def test_networks_axis_expands_and_is_recorded(tmp_path: Path) -> None:
    p = tmp_path / "n.toml"
    p.write_text(SUITE.format(networks='["veth", "1gbit", "100mbit"]', nnodes=2))
    trials = suites.load(str(p)).trials
    assert len(trials) == 6
    assert {(t.config.network, t.config.nnodes) for t in trials} == {("veth", 2), ("1gbit", 2), ("100mbit", 2)}
    assert len({t.config.trial_id for t in trials}) == 6  # the link is part of what is measured


@pytest.mark.parametrize(
    ("networks", "nnodes", "message"),
    [('["1 gbit"]', 2, "network '1 gbit': expected"), ('["1gbit"]', 1, "needs nnodes = 2"), ('["1gbit"]', 3, "nnodes must be")],
)
def test_bad_network_suites_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], networks: str, nnodes: int, message: str
) -> None:
    p = tmp_path / "n.toml"
    p.write_text(SUITE.format(networks=networks, nnodes=nnodes))
    assert main(["sweep", str(p), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("commbench: error:") and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--nnodes", "2"], "--rdzv-endpoint must be HOST:PORT"),
        (["--nnodes", "2", "--rdzv-endpoint", "node0"], "--rdzv-endpoint must be HOST:PORT"),
        (["--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "node0:29500"], "--node-rank must be in [0, 1]"),
        (["--node-rank", "1"], "go with --nnodes"),
        (["--nnodes", "2", "--rdzv-endpoint", "n:1", "--world-size", "3"], "does not split over --nnodes 2"),
        (["--nnodes", "2", "--rdzv-endpoint", "n:1", "--set", "nnodes=2", "--set", "network=1gbit"], "cannot run with --nnodes"),
    ],
)
def test_placement_options_are_checked(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert main(["run", "--steps", "1", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("commbench: error:") and message in err


def test_one_node_trial_ids_did_not_change() -> None:
    # Placement fields at their defaults stay out of the hash: stored results of one node stay "done".
    cfg = TrialConfig(suite="s", strategy="baseline", model="gpt2-tiny", workload="train", world_size=2)
    old = cfg.to_dict()
    for k in ("timeout_s", "nnodes", "network", "repeats", "repeat_target", "repeat_max", "repeat_max_s"):
        old.pop(k)  # the repeat fields came later, and stay out at their defaults too
    assert cfg.trial_id == hashlib.sha1(canonical_json(old).encode()).hexdigest()[:16]
    spread = TrialConfig(suite="s", strategy="baseline", model="gpt2-tiny", workload="train", world_size=2, nnodes=2)
    assert spread.trial_id != cfg.trial_id and spread.case()["nnodes"] == 2


def test_ungather_takes_every_rank_from_rank_zeros_envelope() -> None:
    ranks = [{"status": "ok", "rank": 0}, {"status": "ok", "rank": 1}]
    assert ungather({0: {"status": "gathered", "ranks": ranks}}) == ({0: ranks[0], 1: ranks[1]}, True)
    assert ungather({1: {"status": "gathered", "ranks": None}}) == ({}, False)  # the node without rank 0


# --- break-even --------------------------------------------------------------------------------


def test_crossing_interpolates_in_log_bandwidth() -> None:
    base = [(1e9, 0.10), (1e8, 0.50)]
    cand = [(1e9, 0.14), (1e8, 0.30)]  # +0.04 above, -0.20 below: crosses at 1/6 of the way in log
    bps, reason = network.crossing(base, cand)
    assert reason is None and bps == pytest.approx(1e9 * 10 ** (-1 / 6), rel=1e-9)


@pytest.mark.parametrize(
    ("cand", "reason"),
    [([(1e9, 0.09), (1e8, 0.3)], "faster than fp32 on every measured link"), ([(1e9, 0.2), (1e8, 0.6)], "never faster"),
     ([(1e9, 0.2)], "fewer than two links")],
)  # fmt: skip
def test_no_crossing_is_null_with_a_reason(cand: list[tuple[float, float]], reason: str) -> None:
    bps, why = network.crossing([(1e9, 0.10), (1e8, 0.50)], cand)
    assert bps is None and why is not None and reason in why


def _curve(strategy: str, nbytes: float, compute: float) -> network.Curve:
    return network.Curve(strategy, (), None, nbytes, 2.0, compute, 0.0)


def test_model_break_even() -> None:
    base = _curve("baseline", 5e6, 0.1)
    assert network.model_break_even(base, _curve("topk", 1e6, 0.14)) == (pytest.approx(8 * 4e6 / 0.04), None)
    assert network.model_break_even(base, _curve("x", 6e6, 0.2))[1] == "moves no fewer bytes than fp32"
    assert "faster at every bandwidth" in str(network.model_break_even(base, _curve("y", 1e6, 0.09))[1])


def test_break_even_from_stored_rows(tmp_path: Path) -> None:
    run = Run("net", "20260105T010000Z-net", "a" * 40, T0)
    network_trials(run, np.random.default_rng(0))
    run.write(tmp_path)
    [case] = network.analyse(read_results([tmp_path]))
    [topk] = case.rows
    # The fixture follows the model exactly (but for 3% step noise): the fit recovers its compute and bytes.
    assert topk.curve.compute_s == pytest.approx(NETWORK_COMPUTE_S["topk(ratio=0.01)"], rel=0.03)
    assert case.baseline.bytes_per_direction == NETWORK_BYTES["baseline"] and case.baseline.model_error < 0.03
    expected = 8 * (NETWORK_BYTES["baseline"] - NETWORK_BYTES["topk(ratio=0.01)"]) / 0.05  # 896 Mbit/s
    assert topk.model_bps == pytest.approx(expected, rel=0.25)
    # Measured: between the 1 Gbit/s link (top-k slower) and 100 Mbit/s (faster), near the model.
    assert 1e8 < topk.measured_bps < 1e9 and abs(math.log(topk.measured_bps / expected)) < math.log(1.3)
    assert [r for r, _ in case.baseline.points] == [10e9, 1e9, 1e8] and case.baseline.unshaped_s is not None
    md = network.markdown([case])
    assert "topk(ratio=0.01)" in md and "Mbit/s" in md


def test_link_columns_subtract_headers_per_packet() -> None:
    from bench.runner.rows import _link_columns

    class W:
        def __init__(self, link: dict[str, int] | None) -> None:
            self.link, self.link_reason = link, None if link else "counted by the node's local rank 0"

    class O:
        def __init__(self, link: dict[str, int] | None) -> None:
            self.window = W(link)

    outs = [O({"rx_bytes": 1_066_000, "rx_packets": 1000}), O({"rx_bytes": 2_132_000, "rx_packets": 2000}), O(None)]
    got = _link_columns(outs, 2, 1_600_000.0, {})  # type: ignore[arg-type]
    assert got["link_bytes_per_step"] == 1_599_000 and got["link_packets_per_step"] == 1500
    assert got["link_payload_bytes_per_step"] == (3_198_000 - TCP_HEADER_BYTES * 3000) / 2 == 1_500_000
    assert got["link_ratio"] == pytest.approx(1_500_000 / 1_600_000)
    reasons: dict[str, str] = {}
    assert _link_columns([O(None)], 2, None, reasons) == {}  # type: ignore[list-item]
    assert reasons["link_ratio"] == "counted by the node's local rank 0"


def test_frame_has_network_columns() -> None:
    from bench.storage.schema import TRIAL_COLUMNS

    names = {c.name for c in TRIAL_COLUMNS}
    assert {"nnodes", "network", "network_rate_bps", "link_bytes_per_step", "link_ratio"} <= names

"""Accounting pieces that need no process group: op names, dtypes, message sizes, socket counters, overlap."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

import pytest
import torch

from bench.comm import wire
from bench.comm.accounting import _DTYPE_NAMES, CollectiveRecord, UnknownDtype, _bytes, message_bytes, normalise_op, summarise
from bench.comm.profile import hidden_time, overlap_fraction
from bench.comm.wire import WireCounter, WireUnavailable, snapshot
from bench.contracts import Accuracy, MemoryPeaks, Parallel, Profile, RankResult, TrialConfig, WindowResult
from bench.meters.window import Window
from bench.runner.rows import _bytes_columns, comm_rows


@pytest.mark.parametrize(
    ("name", "op"),
    [("gloo:all_reduce", "all_reduce"), ("nccl:_allgather_base", "all_gather"), ("nccl:_reduce_scatter_base", "reduce_scatter"),
     ("gloo:all_to_all", "all_to_all"), ("nccl:all_gather_into_tensor_coalesced", "all_gather"), ("gloo:reduce", "reduce"),
     ("nccl:reduce_scatter_tensor_coalesced", "reduce_scatter"), ("gloo:broadcast", "broadcast"), ("nccl:send 0->1", "send"),
     ("allreduce_coalesced", "all_reduce"), ("gloo:gather", "gather"), ("gloo:scatter", "scatter"), ("gloo:barrier", "barrier")],
)  # fmt: skip
def test_normalise_op(name: str, op: str) -> None:
    assert normalise_op(name) == op


def test_message_bytes_follow_nccl_tests() -> None:
    assert message_bytes("all_gather", 100, 400) == 400  # the total output
    # gloo logs DTensor's functional all_gather with a [1, *input] output: S is still n x the input
    assert message_bytes("all_gather", 100, 100, 4) == 400
    assert message_bytes("reduce_scatter", 400, 100) == 400  # the total input
    assert message_bytes("all_reduce", 400, 400) == 400
    assert message_bytes("barrier", 0, 0) == 0


def test_summarise_groups_by_op_dtype_and_group() -> None:
    def rec(op: str, b: int, dtype: str = "float32") -> CollectiveRecord:
        return CollectiveRecord(op, f"gloo:{op}", dtype, b // 4, b, b, b, 2, "0", 0, None, 0)

    s = summarise([rec("all_reduce", 400), rec("all_reduce", 400), rec("all_reduce", 200, "float16"), rec("broadcast", 8)], steps=2)
    assert s["msg_bytes"] == 1008 and s["msg_bytes_per_step"] == 504 and s["calls"] == 4
    rows = {(o["op"], o["dtype"]): o for o in s["ops"]}
    assert rows[("all_reduce", "float32")]["calls"] == 2 and rows[("all_reduce", "float32")]["msg_bytes_per_step"] == 400


def test_overlap_fraction() -> None:
    assert overlap_fraction([(0, 10)], [(0, 10)]) == 1.0
    assert overlap_fraction([(0, 10)], [(10, 20)]) == 0.0
    assert overlap_fraction([(0, 4), (2, 10)], [(5, 7), (6, 8)]) == pytest.approx(3 / 10)
    assert overlap_fraction([], [(0, 1)]) is None


def test_hidden_time_is_the_in_flight_time_inside_compute() -> None:
    assert hidden_time([(0, 4), (2, 10)], [(5, 7), (6, 8)]) == pytest.approx(3)  # unions (0, 10) and (5, 8)
    assert hidden_time([(0, 10)], [(10, 20)]) == 0.0 and hidden_time([], [(0, 1)]) == 0.0


def test_socket_counters_see_exactly_what_crossed_a_tcp_connection() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    payload = b"x" * 3_000_000
    got = bytearray()

    def drain() -> None:
        while len(got) < len(payload):
            got.extend(conn.recv(1 << 20))

    try:
        counter = WireCounter()
        counter.start()
        reader = threading.Thread(target=drain)
        reader.start()
        client.sendall(payload)
        reader.join(timeout=30)
        delta = counter.stop()
        # This process owns both ends: it sent and received the payload once each.
        assert delta["received"] == len(payload)
        assert delta["sent"] == len(payload)
        assert port in _ports(snapshot(exclude_ports=set()))
        assert port not in _ports(snapshot(exclude_ports={port}))  # the excluded port's sockets are skipped
    finally:
        for s in (client, conn, server):
            s.close()


def _ports(snap: dict[int, wire.SocketCounters]) -> set[object]:
    return {p for c in snap.values() for p in (c.local[1], c.peer[1])}


# --- dtypes: bytes per element for every name the flight recorder can log -------------
# Literal sizes, not derived: the oracle for the table accounting derives from torch.
@pytest.mark.parametrize(
    ("name", "dtype", "bytes_per_8"),
    [("Float", "float32", 32), ("Float8_e4m3fn", "float8_e4m3fn", 8), ("Float8_e5m2fnuz", "float8_e5m2fnuz", 8),
     ("Float8_e8m0fnu", "float8_e8m0fnu", 8), ("Float4_e2m1fn_x2", "float4_e2m1fn_x2", 8), ("UInt16", "uint16", 16),
     ("Bits8", "bits8", 8), ("QInt8", "qint8", 8), ("ComplexDouble", "complex128", 128), ("Bool", "bool", 8),
     ("QUInt4x2", "quint4x2", 4), ("QUInt2x4", "quint2x4", 2)],
)  # fmt: skip
def test_recorder_dtype_names_count_their_real_bytes(name: str, dtype: str, bytes_per_8: int) -> None:
    assert _bytes([[2, 4]], [name]) == (8, bytes_per_8)  # the old table counted every fp8 as 4 bytes
    assert _DTYPE_NAMES[name] == dtype


def test_packed_dtypes_round_up_to_whole_bytes_per_tensor() -> None:
    assert _bytes([[7], [1]], ["QUInt4x2", "QUInt4x2"]) == (8, 4 + 1)


def test_every_torch_dtype_has_a_display_name() -> None:
    assert set(_DTYPE_NAMES.values()) == {str(v).removeprefix("torch.") for v in vars(torch).values() if isinstance(v, torch.dtype)}


def test_an_unknown_dtype_name_is_an_error_not_a_guess() -> None:
    with pytest.raises(UnknownDtype, match="'Float6_e3m2fn'"):
        _bytes([[4]], ["Float6_e3m2fn"])


# --- group sizes that could not be resolved: null with a reason, never the world size --
def test_unresolved_group_size_makes_modelled_bytes_null_with_a_reason() -> None:
    def rec(group_size: int | None, group: str) -> dict[str, object]:
        return {"op": "all_reduce", "backend_op": "gloo:all_reduce", "dtype": "float32", "numel": 4, "in_bytes": 16,
                "out_bytes": 16, "msg_bytes": 16, "group_size": group_size, "group": group, "rank": 0, "peer": None, "t_ns": 0}  # fmt: skip

    records = [CollectiveRecord(**rec(2, "0")), CollectiveRecord(**rec(None, "7"))]  # type: ignore[arg-type]
    memory = MemoryPeaks(rss_end=0, rss_peak=0, rss_peak_method="kernel-VmHWM", cuda_max_allocated=None,
                         cuda_max_reserved=None, nvml_process_used=None, nvml_device_used=None)  # fmt: skip
    window = WindowResult(step_times_s=[1.0], memory=memory, comm_records=[rec(2, "0"), rec(None, "7")],
                          comm_summary=summarise(records, steps=1), wire={"received": 40})  # fmt: skip
    out = RankResult(rank=0, window=window, tokens_per_step=None, accuracy=Accuracy(), metrics={}, analytic_ops=None,
                     parallel=Parallel(dp=2))  # fmt: skip
    assert window.comm_summary is not None and {o["group_size"] for o in window.comm_summary["ops"]} == {2, None}
    reasons: dict[str, str] = {}
    cols = _bytes_columns([out], 1, TrialConfig(suite="t", strategy="none", model="m", workload="train"), reasons)
    assert "modelled_wire_bytes_per_step" not in cols and "wire_ratio" not in cols
    assert "['7']" in reasons["modelled_wire_bytes_per_step"] and reasons["wire_ratio"] == reasons["modelled_wire_bytes_per_step"]
    assert cols["comm_logical_bytes_per_step"] == 32 and cols["wire_bytes_per_step"] == 40  # still known
    out.profile = Profile(steps=1, per_op={"all_reduce": {"time_s_per_call": 1.0}}, comm_time_s_per_step=None,
                          overlap_fraction=None)  # fmt: skip
    rows = comm_rows("r", TrialConfig(suite="t", strategy="none", model="m", workload="train"), [out])
    assert {r["group_size"]: r["busbw_Bps"] is None for r in rows} == {2: False, None: True}


# --- wire bytes: a socket lost in the window, or none at all, is unknown, not 0 ---------
@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket, int]]:
    """A connected loopback pair (client, server side) and the server's port."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    server.close()
    yield client, conn, port
    client.close()
    conn.close()


def test_a_socket_closed_inside_the_window_makes_wire_bytes_unknown(tcp_pair: tuple[socket.socket, socket.socket, int]) -> None:
    client, conn, port = tcp_pair
    counter = WireCounter(expect_sockets=True)
    counter.start()
    client.sendall(b"x" * 1000)
    conn.recv(1000)
    client.close()  # its 1000 sent bytes leave with it; conn's received count alone would read as the truth
    with pytest.raises(WireUnavailable, match=f"closed, reset or replaced.*:{port}"):
        counter.stop()


def test_a_socket_replaced_on_the_same_fd_makes_wire_bytes_unknown(tcp_pair: tuple[socket.socket, socket.socket, int]) -> None:
    client = tcp_pair[0]
    counter = WireCounter(expect_sockets=True)
    counter.start()
    fd = client.fileno()
    other_server = socket.create_server(("127.0.0.1", 0))
    other_client = socket.create_connection(other_server.getsockname())
    os.dup2(other_client.fileno(), fd)  # same fd, another connection: the first one's bytes are gone
    try:
        with pytest.raises(WireUnavailable, match=f"fd {fd} "):
            counter.stop()
    finally:
        other_client.close()
        other_server.close()


def test_a_socket_opened_inside_the_window_counts_from_zero() -> None:
    counter = WireCounter(expect_sockets=False)
    counter.start()
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    conn, _ = server.accept()
    try:
        client.sendall(b"y" * 5000)
        got = 0
        while got < 5000:
            got += len(conn.recv(5000))
        delta = counter.stop()
        assert delta["sent"] == delta["received"] == 5000
    finally:
        for s in (client, conn, server):
            s.close()


def test_no_socket_yielding_tcp_info_is_unknown_on_a_multi_rank_group(
    tcp_pair: tuple[socket.socket, socket.socket, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire, "_TCP_INFO_LEN", 100)  # as on a kernel without tcpi_bytes_sent: no socket qualifies
    counter = WireCounter(expect_sockets=True)
    counter.start()
    with pytest.raises(WireUnavailable, match="no TCP socket of the backend yielded TCP_INFO"):
        counter.stop()
    single = WireCounter(expect_sockets=False)  # one rank: gloo has no peer, so no socket is right
    single.start()
    assert single.stop() == {"sent": 0, "received": 0, "segs_out": 0, "sockets": 0}


def test_counters_that_went_down_are_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    def snap(sent: int) -> dict[int, wire.SocketCounters]:
        return {1: wire.SocketCounters(5, ("127.0.0.1", 1), ("127.0.0.1", 2), sent, 0, 0, 0)}

    counter = WireCounter(expect_sockets=True)
    monkeypatch.setattr(wire, "snapshot", lambda: snap(100))
    counter.start()
    monkeypatch.setattr(wire, "snapshot", lambda: snap(10))
    with pytest.raises(WireUnavailable, match="went down.*fd 5"):
        counter.stop()


def test_the_window_stores_unknown_wire_bytes_as_null_with_the_reason(tcp_pair: tuple[socket.socket, socket.socket, int]) -> None:
    window = Window(torch.device("cpu"), "gloo")
    window.comm = None  # no process group in this test: only the wire half of the window
    window.wire = WireCounter(expect_sockets=True)
    window.start()
    tcp_pair[0].close()
    out = window.stop(1)
    assert out.wire is None and out.wire_reason is not None and "closed, reset or replaced" in out.wire_reason

"""Logical bytes of every collective a rank issues, from torch's flight recorder.

Why the flight recorder: every c10d backend (gloo, NCCL) appends an entry to it when a
collective is enqueued, whoever issued it - DDP's C++ reducer, FSDP2, DTensor's
functional collectives, comm hooks or user code - with shapes and dtypes. Recording is an
append to an in-memory ring, with no device sync and no wait on the collective, so
compute/communication overlap is untouched (unlike a logger that synchronises after each
call). torch.profiler also sees C++ collectives, but records every aten op as well: its
per-op cost lands on the step being measured, so it is kept for an opt-in pass.

The recorder logs what the *backend* runs: on gloo, `reduce_scatter` appears as
`gloo:all_reduce` of the whole input, because that is how ProcessGroupGloo implements it.
That is a real cost difference and is reported as such.

Gap filled by hand: gloo does not record point-to-point ops in the flight recorder
(checked on torch 2.13), so `ProcessGroup.send/recv` are wrapped to log them. Point-to-
point ops are only ever issued from Python (pipelining, user code), so the wrapper sees
them all; flight-recorder p2p entries (NCCL has them) are ignored to avoid counting twice.
"""

from __future__ import annotations

import pickle
import threading
import time
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch._C._distributed_c10d import _dump_fr_trace


def _dtype_tables() -> tuple[dict[str, int], dict[str, str]]:
    """Flight-recorder dtype names -> bits per element and display names, for every torch dtype.

    The recorder logs c10 ScalarType names ("Float", "Float8_e4m3fn", "QUInt4x2"), the
    names TorchScript's TensorType reports, so the tables come from torch itself rather than
    a hand-kept list that silently misses new dtypes. Bits come from the storage of an
    8-element tensor: `dtype.itemsize` for all but QUInt4x2 and QUInt2x4, which pack 2 and 4
    elements into each byte while their itemsize says 1.
    """
    bits, names = {}, {}
    with warnings.catch_warnings():  # ComplexHalf and quantized dtypes warn on creation
        warnings.simplefilter("ignore")
        for dtype in {v for v in vars(torch).values() if isinstance(v, torch.dtype)}:
            probe = torch.empty(8, dtype=dtype)
            name = torch._C.TensorType.create_from_tensor(probe).scalarType()
            bits[name] = probe.untyped_storage().nbytes()  # bytes of 8 elements = bits of one
            names[name] = str(dtype).removeprefix("torch.")
    return bits, names


_DTYPE_BITS, _DTYPE_NAMES = _dtype_tables()


class UnknownDtype(ValueError):
    """The flight recorder logged a dtype this torch build does not know: its bytes cannot be counted."""


OPS = (
    "all_reduce", "all_gather", "reduce_scatter", "broadcast", "reduce", "all_to_all",
    "gather", "scatter", "barrier", "send", "recv",
)  # fmt: skip


@dataclass(slots=True)
class CollectiveRecord:
    """One collective (or p2p op) as issued by one rank.

    `msg_bytes` is the size S that nccl-tests uses for algorithm bandwidth: the buffer
    for all_reduce/broadcast/reduce, the *total* (all ranks) array for all_gather and
    reduce_scatter, this rank's input for all_to_all, the tensor for send/recv.
    """

    op: str  # normalised op name, one of OPS (the backend's op, see module doc)
    backend_op: str  # as recorded, e.g. "gloo:all_reduce"
    dtype: str
    numel: int  # elements of the input tensor(s)
    in_bytes: int
    out_bytes: int
    msg_bytes: int
    group_size: int | None  # None: the group was gone before the window closed (unknown, not guessed)
    group: str
    rank: int
    peer: int | None  # for send/recv
    t_ns: int  # when it was issued (wall clock, ns)


# Checked in order against the op name with underscores removed: longer names first, so
# that "allreduce" wins over "reduce" and "reducescatter" over "scatter".
_OP_KEYS = (
    ("reducescatter", "reduce_scatter"), ("allreduce", "all_reduce"), ("allgather", "all_gather"),
    ("alltoall", "all_to_all"), ("broadcast", "broadcast"), ("reduce", "reduce"), ("gather", "gather"),
    ("scatter", "scatter"), ("barrier", "barrier"), ("send", "send"), ("recv", "recv"),
)  # fmt: skip


def normalise_op(name: str) -> str:
    """`gloo:all_reduce`, `nccl:_allgather_base`, `allreduce_coalesced` -> a name in OPS."""
    compact = name.split(":", 1)[-1].lower().replace("_", "")
    return next((op for key, op in _OP_KEYS if key in compact), compact)


def _bytes(sizes: list[list[int]], dtypes: list[str]) -> tuple[int, int]:
    numel = total = 0
    for shape, dt in zip(sizes, dtypes):
        if dt not in _DTYPE_BITS:
            raise UnknownDtype(f"flight recorder dtype {dt!r} is not a dtype of torch {torch.__version__}; known: {sorted(_DTYPE_BITS)}")
        n = 1
        for d in shape:
            n *= int(d)
        numel += n
        total += -(-n * _DTYPE_BITS[dt] // 8)  # packed dtypes round up to whole bytes, as their storage does
    return numel, total


def message_bytes(op: str, in_bytes: int, out_bytes: int, group_size: int | None = None) -> int:
    """nccl-tests' S for `op` given a rank's input and output bytes (and the group's size, where known).

    An all_gather's S is every rank's input: n x this rank's, whatever the recorder says of the
    output. On gloo, the functional all_gather that DTensor issues (`_c10d_functional.
    all_gather_into_tensor`) is logged with output sizes [1, *input] instead of [n, *input].
    """
    if op == "all_gather":
        return max(out_bytes, in_bytes * (group_size or 1))
    if op == "gather":
        return max(out_bytes, in_bytes)
    if op == "scatter":
        return max(in_bytes, out_bytes)
    if op == "barrier":
        return 0
    return in_bytes


def live_group_sizes() -> dict[str, int]:
    """Name -> size of every process group alive in this process now.

    The flight recorder names an entry's group but not its size or ranks (its `pg_config`
    is empty on gloo in torch 2.13), so sizes are looked up while the groups live. Never
    cached across windows: names restart from "0" after the default group is destroyed.
    """
    if not dist.is_initialized():
        return {}
    return {name: pg.size() for pg, name in dist.distributed_c10d._world.pg_names.items()}


def _resolve_group_size(name: str, known: dict[str, int]) -> int | None:
    if name in known:
        return known[name]
    try:  # a group registered only with c10d's C++ registry
        return dist.distributed_c10d._resolve_process_group(name).size()
    except RuntimeError:  # destroyed before this lookup: its size is unknown, not the world's
        return None


def _from_flight_recorder(entry: dict[str, Any], rank: int, group_sizes: dict[str, int]) -> CollectiveRecord:
    op = normalise_op(entry["profiling_name"])
    in_dtypes = entry.get("input_dtypes") or []
    numel, in_b = _bytes(entry.get("input_sizes") or [], in_dtypes)
    _, out_b = _bytes(entry.get("output_sizes") or [], entry.get("output_dtypes") or in_dtypes)
    group = str(entry["process_group"][0])
    dtype = _DTYPE_NAMES[in_dtypes[0]] if in_dtypes else "none"
    size = _resolve_group_size(group, group_sizes)
    return CollectiveRecord(
        op=op, backend_op=entry["profiling_name"], dtype=dtype, numel=numel, in_bytes=in_b, out_bytes=out_b,
        msg_bytes=message_bytes(op, in_b, out_b, size), group_size=size,
        group=group, rank=rank, peer=None, t_ns=int(entry.get("time_created_ns") or 0),
    )  # fmt: skip


# --- point-to-point interposition ---------------------------------------------------
_p2p_lock = threading.Lock()
_p2p_log: list[CollectiveRecord] | None = None  # None: not recording
_installed = False


def _p2p_record(op: str, pg: dist.ProcessGroup, tensors: list[torch.Tensor], peer: int) -> None:
    log = _p2p_log
    if log is None:
        return
    numel = sum(t.numel() for t in tensors)
    nbytes = sum(t.numel() * t.element_size() for t in tensors)
    rec = CollectiveRecord(
        op=op, backend_op=f"{pg.name()}:{op}", dtype=str(tensors[0].dtype).removeprefix("torch."),
        numel=numel, in_bytes=nbytes, out_bytes=nbytes, msg_bytes=nbytes, group_size=pg.size(),
        group=pg.group_name, rank=dist.get_rank(), peer=peer, t_ns=time.time_ns(),
    )  # fmt: skip
    with _p2p_lock:
        log.append(rec)


def install_p2p_interposer() -> None:
    """Wrap ProcessGroup.send/recv once per process (idempotent)."""
    global _installed
    if _installed:
        return
    orig_send, orig_recv = dist.ProcessGroup.send, dist.ProcessGroup.recv

    def send(self: dist.ProcessGroup, tensors: list[torch.Tensor], dst: int, tag: int = 0) -> Any:
        _p2p_record("send", self, tensors, dst)
        return orig_send(self, tensors, dst, tag)

    def recv(self: dist.ProcessGroup, tensors: list[torch.Tensor], src: int, tag: int = 0) -> Any:
        _p2p_record("recv", self, tensors, src)
        return orig_recv(self, tensors, src, tag)

    dist.ProcessGroup.send = send  # type: ignore[method-assign]
    dist.ProcessGroup.recv = recv  # type: ignore[method-assign]
    _installed = True


def flight_recorder_entries() -> list[dict[str, Any]]:
    """This process's flight-recorder entries (collectives, without stack traces)."""
    trace = pickle.loads(_dump_fr_trace(includeCollectives=True, includeStackTraces=False))
    return trace.get("entries", [])


class FlightRecorderOverflow(RuntimeError):
    pass


class CommAccountant:
    """Collects every collective this rank issues between `start()` and `stop()`."""

    def __init__(self) -> None:
        install_p2p_interposer()
        self._mark: int = -1
        self._groups: dict[str, int] = {}

    def start(self) -> None:
        global _p2p_log
        # Groups alive now, so that one destroyed inside the window still has its size.
        self._groups = live_group_sizes()
        entries = flight_recorder_entries()
        self._mark = max((e["record_id"] for e in entries), default=-1)
        with _p2p_lock:
            _p2p_log = []

    def stop(self) -> list[CollectiveRecord]:
        """The window's records; raises FlightRecorderOverflow or UnknownDtype rather than under-count."""
        global _p2p_log
        with _p2p_lock:
            p2p, _p2p_log = _p2p_log or [], None
        window = [e for e in flight_recorder_entries() if e["record_id"] > self._mark]
        ids = [e["record_id"] for e in window]
        if ids and len(ids) != max(ids) - self._mark:
            raise FlightRecorderOverflow(
                f"flight recorder dropped {max(ids) - self._mark - len(ids)} entries; raise TORCH_FR_BUFFER_SIZE"
            )
        rank = dist.get_rank()
        groups = self._groups | live_group_sizes()
        records = [_from_flight_recorder(e, rank, groups) for e in window if not e.get("is_p2p")]
        return sorted(records + p2p, key=lambda r: r.t_ns)


def summarise(records: list[CollectiveRecord], steps: int) -> dict[str, Any]:
    """Per-op totals for one rank: calls and bytes, overall and per step."""
    by_op: dict[tuple[str, str, int | None], dict[str, float]] = defaultdict(lambda: {"calls": 0, "msg_bytes": 0, "numel": 0})
    for r in records:
        agg = by_op[(r.op, r.dtype, r.group_size)]
        agg["calls"] += 1
        agg["msg_bytes"] += r.msg_bytes
        agg["numel"] += r.numel
    ops = [
        {"op": op, "dtype": dt, "group_size": gs, **vals, "msg_bytes_per_step": vals["msg_bytes"] / steps}
        for (op, dt, gs), vals in sorted(by_op.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0))
    ]
    total = sum(r.msg_bytes for r in records)
    return {"ops": ops, "msg_bytes": total, "msg_bytes_per_step": total / steps, "calls": len(records)}


def records_to_dicts(records: list[CollectiveRecord]) -> list[dict[str, Any]]:
    return [asdict(r) for r in records]

"""Result columns: name, arrow type, unit and meaning. The schema tables of docs/schema.md are generated from here.

The columns name their arrow types as text (`"int64"`, `"list<item: double>"`: pyarrow's own
spelling), so a rank can check its metric declarations against them without importing
pyarrow, whose allocator threads would make a spawned rank differ from a forked one;
`TRIAL_SCHEMA` and `COMM_SCHEMA`, the pyarrow schemas, are built on first use.

Bump SCHEMA_VERSION when a column changes meaning or type; readers refuse newer versions.
What the numbers in a row measure is versioned apart, by `contracts.MEASUREMENT_VERSION`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

from bench.contracts import PHASES

SCHEMA_VERSION = 4  # 4: launch-level CIs, repeats and noise columns


@dataclass(frozen=True, slots=True)
class Column:
    """One result column; `label` and `fmt` (a formatter of `bench.reports.fmt`) are how a report shows it."""

    name: str
    type: str  # the arrow type as pyarrow prints it
    unit: str
    doc: str
    group: str
    label: str = ""  # a table heading; empty: the column's name
    fmt: str = "text"

    @property
    def heading(self) -> str:
        return self.label or self.name


Spec = tuple[str, str, str, str] | tuple[str, str, str, str, str, str]


def _cols(group: str, *specs: Spec) -> list[Column]:
    """Columns from (name, type, unit, doc) or (name, type, unit, doc, label, fmt)."""
    return [Column(*spec[:4], group, *spec[4:]) for spec in specs]  # type: ignore[misc]


F64, I64, STR, BOOL = "double", "int64", "string", "bool"
LIST_F64, LIST_I64, LIST_STR = "list<item: double>", "list<item: int64>", "list<item: string>"
TS = "timestamp[us, tz=UTC]"

# The time figures with a CI over launches (bench/runner/repeats.py combines them), and their units:
# the step, its throughputs and the profiler's times that the predictor reads.
CI_METRICS = (
    ("latency_p50_s", "s"), ("tokens_per_s", "tokens/s"), ("algbw_Bps", "B/s"), ("busbw_Bps", "B/s"),
    ("codec_s_per_step", "s/step"), ("comm_time_s_per_step", "s/step"), ("comm_hidden_s_per_step", "s/step"),
)  # fmt: skip

TRIAL_COLUMNS: list[Column] = [
    *_cols(
        "identity",
        ("schema_version", I64, "", "version of this schema"),
        ("measurement_version", I64, "", "version of the measurement code that wrote the row; a sweep reruns rows of older versions"),
        ("run_id", STR, "", "one sweep invocation", "run", "text"),
        ("trial_id", STR, "", "hash of the resolved trial config (stable across runs)"),
        ("suite", STR, "", "suite name"),
        ("strategy", STR, "", "canonical composition, e.g. `fp16_compress` or `prune(amount=0.5)+quant_int8`"),
        ("strategy_params", STR, "JSON", "every strategy's full params, defaults included"),
        ("model", STR, "", "model zoo name"),
        ("model_params", I64, "count", "distinct parameters of the model before strategies", "parameters", "count"),
        ("weights_source", STR, "", "where the model's weights came from and what they are (e.g. a dequantized 4-bit GGUF)"),
        ("workload", STR, "", "a registered workload (`commbench list workloads`)"),
        ("device", STR, "", "cpu | cuda"),
        ("backend", STR, "", "gloo | nccl"),
        ("world_size", I64, "ranks", "number of ranks"),
        ("nnodes", I64, "nodes", "nodes the ranks are spread over (real hosts, or network namespaces when `network` is set)"),
        ("network", STR, "", "emulated link between namespace nodes (`veth`, `1gbit`, `100mbit+5ms`); null on one node or a real cluster"),
        ("network_rate_bps", F64, "bit/s", "the link's tc rate limit; null: unshaped"),
        ("network_delay_s", F64, "s", "the link's one-way netem delay; null: none"),
        ("dp", I64, "ranks", "data-parallel degree", "dp", "count"),
        ("tp", I64, "ranks", "tensor-parallel degree", "tp", "count"),
        ("pp", I64, "ranks", "pipeline-parallel degree", "pp", "count"),
        ("batch_size", I64, "sequences", "per-rank (micro-)batch size"),
        ("seq_len", I64, "tokens", "sequence length"),
        ("steps", I64, "steps", "measured steps (after warmup)"),
        ("warmup_steps", I64, "steps", "steps run before measuring, excluded from every statistic"),
        ("seed", I64, "", "the trial's seed (model init, data stream, codec noise); not part of the case: a suite's `seeds` axis repeats a case"),
        ("tokens_per_step", I64, "tokens", "tokens one rank processes per step"),
    ),
    *_cols(
        "outcome",
        ("status", STR, "", "ok | failed | skipped"),
        ("error", STR, "", "skipped: the reason; failed: the root-cause rank's traceback tail"),
        ("error_class", STR, "", "failed: exception, signal, exit, timeout, oom, contract, aggregation, launch or job; null otherwise"),
        ("failed_rank", I64, "rank", "failed: the root-cause rank; null when no single rank failed (timeout, launch, job)"),
        ("failed_phase", STR, "", "failed: the phase (phase_* columns) the failed rank was in, rank 0's when no single rank failed; from the ranks' timeline journals"),
        ("stderr_tail", STR, "", "failed: last lines of that rank's stderr log; after a timeout every rank's, with its stack dump"),
    ),
    *_cols(
        "latency",
        ("latency_p50_s", F64, "s", "median step time; a step's time is the max over ranks", "p50 ms", "ms"),
        ("latency_p90_s", F64, "s", "90th percentile step time", "p90 ms", "ms"),
        ("latency_p99_s", F64, "s", "99th percentile step time", "p99 ms", "ms"),
        ("latency_mean_s", F64, "s", "mean step time"),
        ("latency_std_s", F64, "s", "standard deviation of step time"),
        ("latency_samples_s", LIST_F64, "s", "every measured step: max over ranks"),
        ("latency_spread_s", LIST_F64, "s", "every measured step: max minus min over ranks"),
        ("tokens_per_s", F64, "tokens/s", "all ranks' tokens per step / median step time; null for workloads without tokens"),
        ("gen_tokens_per_s", F64, "tokens/s", "infer, causal LMs: greedy generate throughput summed over ranks", "generate tok/s", "count"),
        ("transfer_encode_p50_s", F64, "s", "transfer: median time rank 0 takes to pack the state (inside the step)"),
        ("transfer_broadcast_p50_s", F64, "s", "transfer: median time from rank 0's packed buffer to the last receiver holding it"),
        ("transfer_decode_p50_s", F64, "s", "transfer: median time of the slowest receiver's unpacking; a step is encode + broadcast + decode"),
        ("codec_s_per_step", F64, "s/step", "compressing DDP hooks: rank 0's last-step buckets replayed through the hook on a one-rank gloo group, less the same through a plain all_reduce (median of 5 rounds): the codec's encode and decode, apart from the link", "codec ms/step", "ms"),
        ("codec_elements", I64, "elements", "gradient elements in those buckets"),
        *(spec for col, unit in CI_METRICS for spec in (
            (f"{col}_ci_low", F64, unit, f"low end of the CI over launches of {col}'s median (level: ci_level); null under 3 launches"),
            (f"{col}_ci_high", F64, unit, "high end of the same CI"),
            (f"{col}_per_launch", LIST_F64, unit, f"{col} of each launch, in launch order; the column itself is their median"),
        )),
    ),
    *_cols(
        "repeats",
        ("launches", I64, "launches", "launches of the trial's ranks that this row combines (`repeats`); the time figures are medians over them"),
        ("launch_rounds", LIST_I64, "", "the sweep round of each launch: launches of one round ran between the same neighbours, so ratios within a round pair them"),
        ("ci_level", F64, "ratio", "coverage of the launch-level CIs: the order-statistic interval of the median, >= 0.95 from 6 launches; [min, max] below (0.75 at 3, 0.875 at 4, 0.9375 at 5)"),
        ("repeats", STR, "", "the trial's repeats setting: a launch count, or `auto` (launch until the step p50's CI is within repeat_target)"),
        ("repeat_target_met", BOOL, "", "auto: whether the step p50's CI half-width reached repeat_target; null for a fixed count"),
        ("repeat_stop", STR, "", "why launching stopped: target, max launches, max seconds, fixed, failed, skipped; `unfinished` while (or if a sweep was killed while) it ran"),
        ("round_seed", I64, "", "seed of the sweep's round order: round r runs its trials in the order random.Random(seed + r) shuffles them"),
    ),
    *_cols(
        "noise",
        ("noise_ref_s", LIST_F64, "s", "the sweep's reference workload timings (20 sorts of 64 Ki doubles, one thread), taken between launches"),
        ("noise_ref_cv", F64, "ratio", "their coefficient of variation (std / mean) over the sweep"),
        ("noise_foreign_cores", F64, "cores", "median over the reference bursts of the cores busy with other programs (/proc/stat minus this process)"),
        ("load_avg_1m", F64, "", "highest 1-minute load average seen at a reference burst (includes the sweep's own recent ranks)"),
        ("noisy", BOOL, "", "reference CV > 5% or other programs busy on > 25% of the cores: this sweep's times are not comparable with a quiet one's"),
    ),
    *_cols(
        "memory",
        ("mem_rss_peak_bytes_max", I64, "B", "max over ranks of the RSS high-water mark in the window (see mem_rss_peak_method)", "peak RSS MB (max rank)", "mb"),
        ("mem_rss_peak_bytes_sum", I64, "B", "sum over ranks of the same", "peak RSS MB (all ranks)", "mb"),
        ("mem_rss_peak_bytes_per_rank", LIST_I64, "B", "per rank"),
        ("mem_rss_peak_method", STR, "", "kernel-VmHWM (exact) or psutil-sampled-5ms (a lower bound, noted in null_reasons)"),
        ("mem_cuda_max_allocated_bytes_max", I64, "B", "max over ranks of torch.cuda.max_memory_allocated (tensors)", "CUDA allocated MB", "mb"),
        ("mem_cuda_max_allocated_bytes_sum", I64, "B", "sum over ranks of the same"),
        ("mem_cuda_max_reserved_bytes_max", I64, "B", "max over ranks of torch.cuda.max_memory_reserved (allocator pool)", "CUDA reserved MB", "mb"),
        ("mem_nvml_process_bytes_max", I64, "B", "max over ranks of NVML's memory for the rank's process (incl. context)", "NVML process MB", "mb"),
        ("mem_nvml_device_used_bytes_max", I64, "B", "NVML used memory of the whole device (all processes), max over ranks"),
        ("model_state_bytes_per_rank", LIST_I64, "B", "train: params + grads + optimizer states each rank holds at the optimizer step (local shards, exact)"),
        ("model_state_bytes_max", I64, "B", "max over ranks of the same: the ZeRO paper's (4+4+8)Psi/N_d for fp32 AdamW under ZeRO-3", "model state MB (max rank)", "mb"),
        ("model_state_peak_bytes_max", I64, "B", "max over ranks of model state plus the unsharded params the layout keeps from forward to backward (FSDP2: the root; ZeRO-2: every group)", "model state peak MB", "mb"),
    ),
    *_cols(
        "device",
        ("gpu_util_percent_mean", F64, "%", "CUDA: NVML utilization.gpu sampled every 0.1 s over the window (share of time a kernel ran), mean over samples, then ranks"),
        ("gpu_util_percent_per_rank", LIST_F64, "%", "per rank: mean over its samples"),
    ),
    *_cols(
        "bytes",
        ("comm_logical_bytes_per_step", F64, "B/step", "sum over ranks of collective message bytes (nccl-tests S) per step", "logical MB/step (all ranks)", "mb"),
        ("comm_logical_bytes_per_step_per_rank", LIST_F64, "B/step", "per rank"),
        ("comm_calls_per_step", F64, "calls/step", "collectives per step on rank 0", "calls/step", "num"),
        ("analytic_logical_bytes_per_step_per_rank", F64, "B/step", "cost model: message bytes per rank per step (rank 0's)", "analytic MB/step/rank", "mb"),
        ("analytic_logical_bytes_per_step_by_rank", LIST_F64, "B/step", "cost model per rank, where ranks differ (pipeline stages)"),
        ("analytic_ops", STR, "JSON", "cost model per op, as asked for: op -> message bytes per rank per step"),
        ("wire_bytes_per_step", F64, "B/step", "TCP payload bytes received by all ranks' backend sockets per step", "wire MB/step", "mb"),
        ("wire_bytes_per_step_per_rank", LIST_F64, "B/step", "per rank"),
        ("modelled_wire_bytes_per_step", F64, "B/step", "cost model applied to the recorded collectives (backend's algorithm)", "modelled wire MB/step", "mb"),
        ("wire_ratio", F64, "ratio", "wire_bytes_per_step / modelled_wire_bytes_per_step", "measured / modelled wire", "ratio"),
        ("link_bytes_per_step", F64, "B/step", "bytes received on the nodes' veth interfaces (kernel counters, all headers included), summed over nodes"),
        ("link_packets_per_step", F64, "packets/step", "packets received on the nodes' veth interfaces, summed over nodes"),
        ("link_payload_bytes_per_step", F64, "B/step", "link_bytes_per_step minus 66 B of Ethernet/IPv4/TCP headers per packet: the TCP payload"),
        ("link_ratio", F64, "ratio", "link_payload_bytes_per_step / modelled_wire_bytes_per_step"),
        ("comm_time_s_per_step", F64, "s/step", "profiler pass: time with a collective in flight, max over ranks", "comm ms/step", "ms"),
        ("comm_overlap_fraction", F64, "ratio", "profiler pass: share of that time the main thread was computing, mean over ranks", "hidden by compute", "pct"),
        ("comm_hidden_s_per_step", F64, "s/step", "profiler pass: collective time in flight while the main thread computed, mean over ranks (the predictor's overlap)", "hidden comm ms/step", "ms"),
        ("algbw_Bps", F64, "B/s", "collectives workload: message bytes S / median call time", "algbw MB/s", "mb"),
        ("busbw_Bps", F64, "B/s", "collectives workload: algbw x the op's nccl-tests bus factor", "busbw MB/s", "mb"),
        ("input_bytes_per_step", F64, "B/step", "input workload: bytes the data rank broadcast per step (flight recorder, nccl-tests S): ids, lengths/offsets, header"),
        ("input_tokens_per_step", F64, "tokens/step", "input workload: document tokens per batch (slots minus padding), mean over the measured steps"),
        ("padded_token_fraction", F64, "ratio", "input workload: share of the id slots sent that are padding, over the measured steps"),
    ),
    *_cols(
        "accuracy",
        ("final_train_loss", F64, "nats", "train: mean over ranks of the last step's loss", "final train loss", "num"),
        ("eval_loss", F64, "nats", "train: loss on held-out batches after the run (synthetic source, or the corpus's held-out tokens)", "eval loss", "num"),
        ("eval_loss_before", F64, "nats", "train with options.source = corpus: the same held-out loss before the first step"),
        ("bayes_loss", F64, "nats", "the Bayes-optimal loss on the same held-out batches (the floor)"),
        ("entropy_rate", F64, "nats/token", "entropy rate of the synthetic Markov source"),
        ("loss_gap_to_floor", F64, "nats", "eval_loss - bayes_loss", "gap to floor", "num"),
        ("loss_curve", LIST_F64, "nats", "train loss per step (mean over ranks), sampled to at most loss_curve_points"),
        ("perplexity", F64, "ppl", "infer, pretrained causal LMs: windowed perplexity on the corpus (window and stride in accuracy_protocol)", "perplexity", "num"),
        ("perplexity_tokens", I64, "tokens", "tokens scored for that perplexity"),
        ("reference_perplexity", F64, "ppl", "infer, pretrained causal LMs: the uncompressed reference's perplexity, same protocol"),
        ("kl_mean", F64, "nats", "infer: mean KL(reference || model) of next-token distributions vs the uncompressed model", "KL (nats)", "num"),
        ("top1_agreement", F64, "ratio", "infer: share of positions whose argmax matches the uncompressed model's", "top-1 agreement", "num"),
        ("embedding_cosine", F64, "ratio", "infer, embedding models: mean cosine of sentence embeddings to the uncompressed model's", "embedding cosine", "num"),
        ("accuracy_protocol", STR, "JSON", "how accuracy was measured: corpus, its SHA-256, tokens, window, stride, level, reference"),
    ),
    *_cols(
        "size",
        ("model_bytes", I64, "B", "dense storage of the model after its strategies (quantized weights at their real size)", "model MB (dense)", "mb"),
        ("model_sparse_bytes", I64, "B", "the same with each tensor as a bitmask + non-zeros where that is smaller", "model MB (sparse)", "mb"),
        ("sparsity", F64, "ratio", "share of zeros in the pruned weights (pruning strategies)", "sparsity", "pct"),
        ("transfer_payload_bytes", I64, "B", "transfer: bytes of the packed state rank 0 broadcasts", "payload MB", "mb"),
        ("serialized_bytes", I64, "B", "transfer: torch.save of the plain state dict, for comparison", "torch.save MB", "mb"),
    ),
    *_cols(
        "details",
        ("metrics", STR, "JSON", "strategy-specific measurements (e.g. achieved sparsity, compression stats)"),
        ("null_reasons", STR, "JSON", "for each null measurement column: why it could not be read"),
        ("launcher_cpu_s", F64, "s", "CPU time of the launching (parent) process while ranks ran"),
        ("trial_wall_s", F64, "s", "wall time of the whole trial, launch to teardown"),
        ("log_dir", STR, "", "where each rank's stdout/stderr were written"),
    ),
    *_cols(
        "phases",
        ("launch_method", STR, "", "how the ranks were started: spawn (fresh interpreters) or forkserver (forked from a preloaded server)"),
        ("packed_with", LIST_STR, "", "trial_ids of the trials that ran beside this one on other cores (empty: it ran alone)"),
        ("phase_spawn_s", F64, "s", "launch call until rank 0's process existed (agent, rendezvous store, fork/exec)"),
        ("phase_import_s", F64, "s", "rank 0's process start until its imports were done (torch, transformers, the project)"),
        ("phase_rendezvous_s", F64, "s", "rank 0's init_process_group"),
        ("phase_build_s", F64, "s", "rank 0: model, strategies and data built"),
        ("phase_warmup_s", F64, "s", "rank 0: the untimed warmup steps"),
        ("phase_window_s", F64, "s", "rank 0: the measured window, its fences and snapshots included"),
        ("phase_eval_s", F64, "s", "rank 0: after the window but the profiler pass (evaluation, reference outputs, generate)"),
        ("phase_profile_s", F64, "s", "rank 0: the profiler pass"),
        ("phase_teardown_s", F64, "s", "rank 0's result ready until the launch returned (process group teardown, exit)"),
    ),
    *_cols(
        "environment",
        ("git_sha", STR, "", "commit of commbench, null outside a git checkout"),
        ("git_dirty", BOOL, "", "uncommitted changes to tracked files"),
        ("torch_version", STR, "", "torch version"),
        ("transformers_version", STR, "", "transformers version"),
        ("python_version", STR, "", "Python version"),
        ("packages", STR, "JSON", "versions of the packages that matter"),
        ("cpu_model", STR, "", "CPU model name"),
        ("cpu_cores", I64, "cores", "cores available to the process"),
        ("threads_per_rank", I64, "threads", "torch intra-op threads per rank"),
        ("oversubscribed", BOOL, "", "world_size x threads_per_rank > cpu_cores: timings measure the OS scheduler too"),
        ("kernel_note", STR, "", "why this trial's kernels are slow on this machine, where known (e.g. cast_fp16 on a CPU without native fp16)"),
        ("pin_policy", STR, "", "CPU thread placement (`pin`): `compute` pins the rank's thread after init_process_group (backend threads free), `all` before it (backend threads share its cores), `none` pins nothing"),
        ("pinned_cores", STR, "JSON", "per rank, the cores its compute thread was pinned to (null for an unpinned rank; the column is null, with a reason, when no rank was)"),
        ("thread_cores", STR, "JSON", "per rank, thread name -> the cores it may run on, read after the window (`compute` is the rank's own thread; gloo's are `gloo_tcp_loop`, `pt_gloo_runloop`)"),
        ("gpu_name", STR, "", "GPU model, null on CPU-only machines"),
        ("gpu_count", I64, "GPUs", "visible GPUs"),
        ("gpu_driver", STR, "", "NVIDIA driver version, null without a GPU"),
        ("cuda_version", STR, "", "CUDA version torch was built with, null without a GPU"),
        ("hostname", STR, "", "machine name (info only, not in the history key)"),
        ("started_at", TS, "UTC", "when the trial started"),
        ("history_key", STR, "", "hash of case + software context + hardware: rows with equal keys are comparable"),
        ("config", STR, "JSON", "the full resolved trial config; `commbench run --config` reruns it"),
    ),
]

# Columns that differ between two runs of the same trial, on any launch path: which run
# and when, how it was launched, and what was timed or sampled. Every other column of an
# ok row is determined by the trial, the code and the machine: `spawn` and `forkserver`
# rows of one trial agree on all of them (tests/integration/test_launch_paths.py).
RUN_VARYING = frozenset(
    {"run_id", "started_at", "log_dir", "launch_method", "packed_with", "launcher_cpu_s", "trial_wall_s"}
    | {c.name for c in TRIAL_COLUMNS if c.group in ("latency", "device", "phases", "repeats", "noise")}
    | {c.name for c in TRIAL_COLUMNS if c.name.startswith("mem_")}  # sampled RSS and allocator peaks
    | {"comm_time_s_per_step", "comm_overlap_fraction", "comm_hidden_s_per_step", "algbw_Bps", "busbw_Bps"}  # profiler and latency timings
    # Kernel counters of the window: the start barrier's few bytes land on whichever rank's
    # socket the arrival order picks (seen: [12.0, 2.4] and [7.2, 7.2] B/step for one infer
    # trial), and the store's own traffic may fall inside the window: the sum differed by
    # 2.4-9.6 B/step of ~6-12 MB/step (< 1e-6) between two runs of one trial.
    | {c.name for c in TRIAL_COLUMNS if c.name.startswith(("wire_", "link_"))}
)
# Entries of a row's `metrics` JSON that describe the run, not the trial: timings (`*_s`) and
# whether infer's reference outputs were computed or read from the cache (run order decides), and
# the pipeline bubble measured from step timings.
RUN_VARYING_METRICS = ("reference_cache", "pipeline_bubble_measured")  # the bubble is measured from step timings


def deterministic_view(row: dict) -> dict:
    """A row without its `RUN_VARYING` columns, and its `metrics` JSON without `RUN_VARYING_METRICS` or timings (keys in `_s`)."""
    out = {k: v for k, v in row.items() if k not in RUN_VARYING}
    if isinstance(out.get("metrics"), str):
        metrics = json.loads(out["metrics"])
        out["metrics"] = {k: v for k, v in metrics.items() if not k.endswith("_s") and k not in RUN_VARYING_METRICS}
    return out



def phase_column(phase: str) -> str:
    """The column of one of `contracts.PHASES`."""
    return f"phase_{phase}_s"


PHASE_COLUMNS = tuple(phase_column(p) for p in PHASES)
assert set(PHASE_COLUMNS) <= {c.name for c in TRIAL_COLUMNS}, "every phase of contracts.PHASES needs its column"

COMM_COLUMNS: list[Column] = _cols(
    "comm",
    ("run_id", STR, "", "run"),
    ("trial_id", STR, "", "trial (joins the trials table)"),
    ("rank", I64, "", "issuing rank"),
    ("op", STR, "", "collective as the backend ran it (all_reduce, all_gather, reduce_scatter, broadcast, send, ...)", "op (as run)", "text"),
    ("backend_op", STR, "", "as recorded, e.g. gloo:all_reduce"),
    ("dtype", STR, "", "element type on the wire"),
    ("group_size", I64, "ranks", "size of the process group"),
    ("calls", I64, "calls", "collectives in the measured window"),
    ("numel", I64, "elements", "input elements, summed over calls"),
    ("msg_bytes", I64, "B", "message bytes (nccl-tests S), summed over calls"),
    ("msg_bytes_per_step", F64, "B/step", "msg_bytes / steps", "logical MB/step", "mb"),
    ("time_s_per_call", F64, "s", "profiler pass: mean duration of one call of this op on this rank (gloo only)", "ms/call", "ms"),
    ("algbw_Bps", F64, "B/s", "msg bytes per call / time_s_per_call", "algbw MB/s", "mb"),
    ("busbw_Bps", F64, "B/s", "algbw x bus factor (2(n-1)/n all_reduce, (n-1)/n all_gather/reduce_scatter/all_to_all, 1 otherwise)", "busbw MB/s", "mb"),
)


def arrow_type(name: str) -> pa.DataType:
    """The pyarrow type a column names (one of the constants above)."""
    import pyarrow as pa

    types = {F64: pa.float64(), I64: pa.int64(), STR: pa.string(), BOOL: pa.bool_(), LIST_F64: pa.list_(pa.float64()),
             LIST_I64: pa.list_(pa.int64()), LIST_STR: pa.list_(pa.string()), TS: pa.timestamp("us", tz="UTC")}  # fmt: skip
    got = types[name]
    assert str(got) == name, f"{name!r} is spelt {str(got)!r} by pyarrow"
    return got


def arrow_schema(columns: list[Column]) -> pa.Schema:
    import pyarrow as pa

    meta = {b"commbench_schema_version": str(SCHEMA_VERSION).encode()}
    return pa.schema([pa.field(c.name, arrow_type(c.type)) for c in columns], metadata=meta)


@cache
def _schemas() -> dict[str, pa.Schema]:
    return {"TRIAL_SCHEMA": arrow_schema(TRIAL_COLUMNS), "COMM_SCHEMA": arrow_schema(COMM_COLUMNS)}


def __getattr__(name: str) -> Any:  # TRIAL_SCHEMA and COMM_SCHEMA, built (and pyarrow imported) on first use
    if name in ("TRIAL_SCHEMA", "COMM_SCHEMA"):
        return _schemas()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def markdown(columns: list[Column]) -> str:
    """The schema as a Markdown table (pasted into docs/schema.md; a test keeps them in sync)."""
    lines = ["| column | type | unit | meaning |", "|---|---|---|---|"]
    for c in columns:
        lines.append(f"| `{c.name}` | {c.type} | {c.unit} | {c.doc} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print("### Trials table (`<run_id>.parquet`)\n")
    print(markdown(TRIAL_COLUMNS))
    print("\n### Collectives table (`<run_id>.comm.parquet`)\n")
    print(markdown(COMM_COLUMNS))

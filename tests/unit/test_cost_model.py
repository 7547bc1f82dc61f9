"""The analytic cost model: nccl-tests bandwidth definitions and per-collective wire bytes."""

from __future__ import annotations

import pytest

from bench.comm import cost_model as cm


@pytest.mark.parametrize(
    ("op", "n", "factor"),
    [("all_reduce", 4, 1.5), ("all_reduce", 2, 1.0), ("all_gather", 4, 0.75), ("reduce_scatter", 8, 0.875),
     ("all_to_all", 2, 0.5), ("broadcast", 4, 1.0), ("reduce", 4, 1.0)],
)  # fmt: skip
def test_bus_factors_follow_nccl_tests(op: str, n: int, factor: float) -> None:
    assert cm.bus_factor(op, n) == factor
    assert cm.busbw(op, 1e9, 2.0, n) == pytest.approx(0.5e9 * factor)
    assert cm.algbw(1e9, 2.0) == 0.5e9


@pytest.mark.parametrize("n", [2, 3, 4])
def test_ring_wire_totals(n: int) -> None:
    s = 100_000_000
    assert cm.wire("all_reduce", s, n).total == pytest.approx(2 * (n - 1) * s)
    assert cm.wire("all_gather", s, n).total == pytest.approx((n - 1) * s)
    assert cm.wire("reduce_scatter", s, n).total == pytest.approx((n - 1) * s)
    assert cm.wire("reduce_scatter", s, n, "gloo").total == pytest.approx(2 * (n - 1) * s)
    assert cm.wire("broadcast", s, n).total == pytest.approx((n - 1) * s)
    assert cm.wire("broadcast", s, n, root=1).per_rank[1] == 0.0
    assert cm.wire("scatter", s, n).total == pytest.approx((n - 1) * s / n)
    assert cm.wire("gather", s, n).per_rank[0] == pytest.approx((n - 1) * s / n)


def test_reference_measurements_from_the_issue() -> None:
    # 100 MB all-reduce: 200 MB (ws 2) and 600 MB (ws 4) on the wire; 100 MB broadcast at ws 4: 300 MB.
    assert cm.wire("all_reduce", 100_000_000, 2).total == 200_000_000
    assert cm.wire("all_reduce", 100_000_000, 4).total == 600_000_000
    assert cm.wire("broadcast", 100_000_000, 4).total == 300_000_000


def test_single_rank_sends_nothing() -> None:
    assert cm.wire("all_reduce", 10, 1).total == 0.0
    assert cm.bus_factor("all_reduce", 1) == 0.0


def test_unknown_op() -> None:
    with pytest.raises(ValueError):
        cm.wire("teleport", 1, 2)


def test_ddp_step_model() -> None:
    m = cm.ddp_step(1000, 4, buffer_bytes=8)
    assert m["all_reduce"] == 1000 and m["broadcast"] == 8 and m["logical"] == 1008
    assert m["wire_per_rank"] == pytest.approx(1.5 * 1000 + 0.75 * 8)
    assert cm.ddp_step(1000, 2, wire_dtype_bytes=2)["logical"] == 500


def test_fsdp_costs_three_psi_against_ddps_two() -> None:
    psi, n = 1000, 4
    ring = cm.fsdp_step(psi, n)
    assert ring["wire_per_rank"] == pytest.approx(3 * 0.75 * psi)
    assert cm.ddp_step(psi, n)["wire_per_rank"] == pytest.approx(2 * 0.75 * psi)
    assert cm.fsdp_step(psi, n, "gloo")["wire_per_rank"] == pytest.approx(4 * 0.75 * psi)


@pytest.mark.parametrize(
    ("shape", "rank", "expected"),
    [((512, 512), 4, (4 * 1024, True)), ((8, 8), 4, (64, False)), ((1000, 3), 4, (3000, False)), ((256, 64), 64, (256 * 64, False))],
)
def test_powersgd_elements(shape: tuple[int, int], rank: int, expected: tuple[int, bool]) -> None:
    assert cm.powersgd_elements(shape, rank) == expected


def test_tensor_and_pipeline_parallel_models() -> None:
    assert cm.tensor_parallel_step(2, 8, 16, 3)["all_reduce"] == 4 * 3 * 2 * 8 * 16 * 4
    assert cm.pipeline_step(2, 8, 16, stages=4, microbatches=4)["send"] == 2 * 3 * 2 * 8 * 16 * 4


def test_powersgd_step_views_gradients_as_in_torch() -> None:
    # A (512, 512) weight compresses to 4 * 1024; its (512,) bias goes as is (a 512 x 1 matrix);
    # a conv-like (64, 8, 3, 3) weight is viewed as 64 x 72 and compresses to (64 + 72) * 4 = 544,
    # since 544 * 2 < 64 * 72.
    assert cm.as_matrix((64, 8, 3, 3)) == (64, 72)
    assert cm.as_matrix((512,)) == (512, 1)
    assert cm.powersgd_step([(512, 512), (512,), (64, 8, 3, 3)], rank=4) == 4 * 1024 + 512 + 544
    # min_compression_rate moves the threshold: at 10 the (64, 72) matrix no longer pays.
    assert cm.powersgd_step([(64, 8, 3, 3)], rank=4, min_compression_rate=10) == 64 * 72


def test_batched_powersgd_pads_each_bucket_to_a_square() -> None:
    # 1000 elements -> a 32 x 32 square; 1024 -> 32 x 32; P and Q are side x rank each.
    assert cm.batched_powersgd_step([1000, 1024, 1025], rank=2) == 2 * 2 * (32 + 32 + 33)


def test_warmup_mix_counts_plain_steps_inside_the_window() -> None:
    # start_iter 5, 2 warmup steps: iterations 2, 3, 4 of the window are plain, 5..11 compressed.
    assert cm.warmup_mix(10.0, 100.0, start_iter=5, warmup=2, steps=10) == pytest.approx((3 * 100 + 7 * 10) / 10)
    assert cm.warmup_mix(10.0, 100.0, start_iter=2, warmup=3, steps=4) == 10.0
    assert cm.warmup_mix(10.0, 100.0, start_iter=1000, warmup=3, steps=4) == 100.0


def test_gathered_payloads_count_every_ranks_payload() -> None:
    assert cm.gathered_payloads([10, 20], lambda n: 8 * n, n=4) == 4 * 8 * 30


def test_fsdp_ops_pad_dim0_and_regather_all_but_the_root() -> None:
    # Two groups: a block with a (6, 4) weight and a (6,) bias; the root with a (10, 4) embedding.
    groups = [[(6, 4), (6,)], [(10, 4)]]
    assert cm.fsdp_padded_numel((6, 4), 4) == 8 * 4 and cm.fsdp_padded_numel((10, 4), 4) == 12 * 4
    block, root = 8 * 4 + 8, 12 * 4
    zero3 = cm.fsdp_ops(groups, 4, reshard_after_forward=True)
    assert zero3 == {"all_gather": 4.0 * (block + root + block), "reduce_scatter": 4.0 * (block + root)}
    zero2 = cm.fsdp_ops(groups, 4, reshard_after_forward=False, gather_dtype_bytes=2, reduce_as_all_reduce=True, micro_steps=3)
    assert zero2 == {"all_gather": 2.0 * (block + root) * 3, "all_reduce": 4.0 * (block + root)}


def test_tensor_parallel_ops_count_one_all_reduce_per_linear() -> None:
    gpt2 = cm.tensor_parallel_ops(batch=2, seq=8, hidden=16, layers=3, colwise=2, rowwise=2)
    assert gpt2["all_reduce"] == cm.tensor_parallel_step(2, 8, 16, 3)["all_reduce"]  # Megatron's 4 per block
    llama = cm.tensor_parallel_ops(batch=2, seq=8, hidden=16, layers=3, colwise=5, rowwise=2)
    assert llama["all_reduce"] == 7 / 4 * gpt2["all_reduce"]


def test_sequence_parallel_is_megatrons_4_gathers_and_4_reduce_scatters_per_block_whatever_the_plan() -> None:
    act, kw = 2 * 8 * 16 * 4, dict(batch=2, seq=8, hidden=16, layers=3, rowwise=2, sp=True, norm_params=(32, 16))
    gpt2, llama = cm.tensor_parallel_ops(**kw, colwise=2), cm.tensor_parallel_ops(**kw, colwise=5)  # type: ignore[arg-type]
    norms = (3 * 32 + 16) * 4.0
    assert gpt2 == llama == {"all_gather": (4 * 3 + 2) * act, "reduce_scatter": 4 * 3 * act, "all_reduce": norms}
    gloo = cm.tensor_parallel_ops(**kw, colwise=5, reduce_scatter_as_all_reduce=True)  # type: ignore[arg-type]
    assert gloo == {"all_gather": (4 * 3 + 2) * act, "all_reduce": 4 * 3 * act + norms}  # same S, logged as all_reduce


def test_loss_parallel_adds_the_embedding_and_head_activations_and_three_token_vectors() -> None:
    act, tokens = 2 * 8 * 16 * 4, 2 * 8 * 4
    kw = dict(batch=2, seq=8, hidden=16, layers=3, colwise=2, rowwise=2)
    plain = cm.tensor_parallel_ops(**kw)  # type: ignore[arg-type]
    lp = cm.tensor_parallel_ops(**kw, loss_parallel=True, micro_steps=2)  # type: ignore[arg-type]
    assert lp == {"all_reduce": 2 * (plain["all_reduce"] + 2 * act + 3 * tokens)}
    both = cm.tensor_parallel_ops(**kw, sp=True, loss_parallel=True)  # type: ignore[arg-type]
    sp = cm.tensor_parallel_ops(**kw, sp=True)  # type: ignore[arg-type]
    # Under sp the head's input gradient is reduce-scattered back to the sequence shards.
    assert both["reduce_scatter"] - sp["reduce_scatter"] == act
    assert both["all_reduce"] == act + 3 * tokens and "all_reduce" not in sp


@pytest.mark.parametrize(
    ("stages", "ranks", "rank", "sends", "tied"),
    [(2, 2, 0, 1, True), (2, 2, 1, 1, True), (4, 4, 1, 2, False), (4, 4, 3, 1, True), (4, 2, 0, 3, True), (1, 1, 0, 0, False)],
)
def test_pipeline_ops_per_rank(stages: int, ranks: int, rank: int, sends: int, tied: bool) -> None:
    act = 2 * 8 * 16 * 4
    ops = cm.pipeline_ops(batch=2, seq=8, hidden=16, vocab=100, stages=stages, ranks=ranks, rank=rank)
    assert ops.get("send", 0.0) == ops.get("recv", 0.0) == sends * act
    assert ops.get("all_reduce", 0.0) == (100 * 16 * 4 if tied else 0.0)

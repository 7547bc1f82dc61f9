"""Hand-written gradient codecs against their math: errors, unbiasedness, variance, sizes, packing, error feedback."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from bench.strategies.grad_compression import codecs
from bench.strategies.grad_compression.hooks import QSGD, CompressionState, Sign, TopK, encode_bucket, hook_payload_bytes

SIZES = [1, 7, 8, 9, 1000, 4097]


def randn(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


# --- top-k ---------------------------------------------------------------------------


@pytest.mark.parametrize("n,k", [(1, 1), (10, 3), (1000, 10), (4097, 41)])
def test_topk_keeps_the_largest_magnitudes_and_its_error_is_the_dropped_energy(n: int, k: int) -> None:
    x = randn(n)
    values, indices = codecs.topk_encode(x, k)
    assert values.dtype == torch.float32 and indices.dtype == torch.int32 and values.shape == indices.shape == (k,)
    kept = torch.sort(x.abs(), descending=True).values[:k]
    torch.testing.assert_close(torch.sort(values.abs(), descending=True).values, kept, rtol=0, atol=0)
    assert torch.equal(values, x[indices.long()])
    err = (x - codecs.topk_decode(values, indices, n)).pow(2).sum()
    dropped = torch.sort(x.pow(2)).values[: n - k].sum()
    torch.testing.assert_close(err, dropped)


def test_topk_is_exact_when_it_keeps_everything() -> None:
    x = randn(513)
    assert torch.equal(codecs.topk_decode(*codecs.topk_encode(x, 513), 513), x)


@pytest.mark.parametrize("n,ratio,k", [(1, 0.01, 1), (100, 0.01, 1), (1000, 0.01, 10), (1001, 0.01, 11), (5, 1.0, 5)])
def test_topk_count_rounds_up_and_stays_in_range(n: int, ratio: float, k: int) -> None:
    assert codecs.topk_count(n, ratio) == k


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5])
def test_topk_rejects_ratios_outside_unit_interval(ratio: float) -> None:
    with pytest.raises(ValueError, match="ratio"):
        codecs.topk_count(10, ratio)


# --- sign ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("scaled", [True, False])
@pytest.mark.parametrize("zeros", ["zero", "plus"])
def test_sign_decode_is_scale_times_sign_elementwise(n: int, scaled: bool, zeros: str) -> None:
    x = randn(n)
    x[:: max(1, n // 3)] = 0.0
    parts = codecs.sign_encode(x, scaled, zeros)  # type: ignore[arg-type]
    expected_scale = x.abs().sum() / n if scaled else torch.tensor(1.0)
    torch.testing.assert_close(parts[0], expected_scale.reshape(1))
    # sign(0) = 0 with the nonzero plane; one bit alone cannot say 0, so "plus" sends +1.
    sign = torch.sign(x) if zeros == "zero" else torch.where(x >= 0, 1.0, -1.0)
    assert torch.equal(codecs.sign_decode(parts, n), parts[0] * sign)


@pytest.mark.parametrize("zeros", ["zero", "plus"])
def test_error_feedback_on_exact_zeros(zeros: str) -> None:
    # A coordinate whose gradient is exactly 0 on every step (an unused parameter): with the
    # nonzero plane it is sent as 0 and its residual stays 0; with "plus" it is sent as +scale
    # every step, and error feedback then has to push it back (residual -scale).
    state = CompressionState(Sign(zeros=zeros))  # type: ignore[arg-type]
    g = torch.tensor([1.0, -3.0, 0.0, 2.0, 0.0])
    parts = codecs.unpack(encode_bucket(state, 0, g), state.codec.specs(5))
    sent = state.codec.decode(parts, 5)
    scale = 6.0 / 5
    if zeros == "zero":
        assert sent.tolist() == pytest.approx([scale, -scale, 0.0, scale, 0.0])
        assert state.residuals[0][[2, 4]].tolist() == [0.0, 0.0]
    else:
        assert sent[[2, 4]].tolist() == pytest.approx([scale, scale])
        assert state.residuals[0][[2, 4]].tolist() == pytest.approx([-scale, -scale])
    torch.testing.assert_close(state.residuals[0], g - sent)


@pytest.mark.parametrize("n", SIZES)
def test_sign_bits_are_lsb_first_like_numpy_packbits_little(n: int) -> None:
    x = randn(n, seed=n)
    packed = codecs.sign_encode(x)[1]
    reference = np.packbits((x >= 0).numpy(), bitorder="little")
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(n / 8)
    assert np.array_equal(packed.numpy(), reference)


def test_sign_bit_order_by_hand() -> None:
    # Element i is bit i % 8 of byte i // 8: + then seven - gives 0b00000001; the 9th (+) starts byte 1.
    x = torch.tensor([1.0] + [-1.0] * 7 + [1.0])
    assert codecs.sign_encode(x)[1].tolist() == [1, 1]


# --- QSGD ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "levels,dtype",
    [
        (1, torch.int8), (127, torch.int8), (128, torch.int16), (32767, torch.int16),
        (32768, torch.int32), (2**31 - 1, torch.int32),
    ],  # fmt: skip
)
def test_qsgd_uses_the_narrowest_integer_dtype(levels: int, dtype: torch.dtype) -> None:
    assert codecs.qsgd_dtype(levels) == dtype
    _, q = codecs.qsgd_encode(randn(16), levels, torch.Generator().manual_seed(0))
    assert q.dtype == dtype


@pytest.mark.parametrize("levels", [0, 2**31])
def test_qsgd_rejects_level_counts_no_integer_holds(levels: int) -> None:
    with pytest.raises(ValueError, match="levels"):
        codecs.qsgd_dtype(levels)


@pytest.mark.parametrize("levels", [1, 4, 127, 300])
def test_qsgd_levels_are_the_two_neighbours_of_the_scaled_magnitude(levels: int) -> None:
    x = randn(2000)
    norm, q = codecs.qsgd_encode(x, levels, torch.Generator().manual_seed(1))
    torch.testing.assert_close(norm, torch.linalg.vector_norm(x).reshape(1))
    r = x.abs() / norm * levels
    mag = q.abs().to(torch.float64)
    assert ((mag == r.floor()) | (mag == r.floor() + 1)).all()
    assert (q.abs() <= levels).all() and torch.equal(torch.sign(q.float())[q != 0], torch.sign(x)[q != 0])


def test_qsgd_does_not_overflow_int8_when_one_entry_holds_the_whole_norm() -> None:
    for value in (3.0, -0.1, 1e-30, 7.3e12):
        x = torch.zeros(9)
        x[4] = value
        norm, q = codecs.qsgd_encode(x, 127, torch.Generator().manual_seed(0))
        assert q[4].item() == math.copysign(127, value) and (q[torch.arange(9) != 4] == 0).all()
        torch.testing.assert_close(codecs.qsgd_decode(norm, q, 127), x)


def test_qsgd_of_zero_is_zero_without_nans() -> None:
    norm, q = codecs.qsgd_encode(torch.zeros(33), 127, torch.Generator().manual_seed(0))
    assert (q == 0).all() and torch.equal(codecs.qsgd_decode(norm, q, 127), torch.zeros(33))


def test_qsgd_is_reproducible_from_the_generator_seed() -> None:
    x = randn(500)
    a = codecs.qsgd_encode(x, 7, torch.Generator().manual_seed(3))[1]
    b = codecs.qsgd_encode(x, 7, torch.Generator().manual_seed(3))[1]
    c = codecs.qsgd_encode(x, 7, torch.Generator().manual_seed(4))[1]
    assert torch.equal(a, b) and not torch.equal(a, c)


def qsgd_draws(x: torch.Tensor, levels: int, draws: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(12345)
    return torch.stack([codecs.qsgd_decode(*codecs.qsgd_encode(x, levels, gen), levels) for _ in range(draws)]).double()


def exact_variance(x: torch.Tensor, levels: int) -> float:
    """E||Q(x) - x||^2 = (||x||/s)^2 * sum p(1-p), p the fractional part of |x_i|/||x|| * s."""
    x = x.double()
    norm = torch.linalg.vector_norm(x)
    r = x.abs() / norm * levels
    p = r - r.floor()
    return float((norm / levels) ** 2 * (p * (1 - p)).sum())


@pytest.mark.parametrize("n,levels", [(64, 1), (64, 4), (256, 127)])
def test_qsgd_is_unbiased(n: int, levels: int) -> None:
    draws = 4000
    x = randn(n, seed=n + levels)
    mean = qsgd_draws(x, levels, draws).mean(0)
    # E||mean - x||^2 = Var/T for an unbiased quantizer; a bias b would add ||b||^2 for any T.
    # Alistarh et al.'s bound caps Var; 3x covers the chi-square spread of n terms (n >= 64).
    bound = min(n / levels**2, math.sqrt(n) / levels) * float(x.double().pow(2).sum())
    assert float((mean - x.double()).pow(2).sum()) <= 3 * min(bound, exact_variance(x, levels)) / draws


@pytest.mark.parametrize("n,levels", [(64, 1), (1000, 1), (64, 4), (1000, 16), (256, 127)])
def test_qsgd_variance_is_within_the_paper_bound(n: int, levels: int) -> None:
    draws = 2000
    x = randn(n, seed=2 * n + levels)
    empirical = float((qsgd_draws(x, levels, draws) - x.double()).pow(2).sum(1).mean())
    bound = min(n / levels**2, math.sqrt(n) / levels) * float(x.double().pow(2).sum())
    assert empirical <= bound
    assert empirical == pytest.approx(exact_variance(x, levels), rel=0.1)


def test_biased_rounding_fails_the_unbiasedness_check() -> None:
    # The check above can fail: nearest rounding (deterministic, biased) leaves a T-independent error.
    x, levels = randn(64, seed=9).double(), 4
    norm = torch.linalg.vector_norm(x)
    nearest = torch.sign(x) * torch.round(x.abs() / norm * levels) * norm / levels
    assert float((nearest - x).pow(2).sum()) > 3 * exact_variance(x, levels) / 4000


# --- payload sizes -------------------------------------------------------------------


@pytest.mark.parametrize("n", SIZES)
def test_payload_sizes_match_the_formulas_and_the_real_bytes(n: int) -> None:
    x, k = randn(n), codecs.topk_count(n, 0.01)
    cases = [
        (codecs.topk_encode(x, k), codecs.topk_payload_bytes(n, k), 8 * k),
        (codecs.sign_encode(x), codecs.sign_payload_bytes(n), 4 + 2 * math.ceil(n / 8)),
        (codecs.sign_encode(x, zeros="plus"), codecs.sign_payload_bytes(n, "plus"), 4 + math.ceil(n / 8)),
        (codecs.qsgd_encode(x, 127, torch.Generator()), codecs.qsgd_payload_bytes(n, 127), 4 + n),
        (codecs.qsgd_encode(x, 128, torch.Generator()), codecs.qsgd_payload_bytes(n, 128), 4 + 2 * n),
        (codecs.qsgd_encode(x, 40000, torch.Generator()), codecs.qsgd_payload_bytes(n, 40000), 4 + 4 * n),
    ]
    for parts, formula, by_hand in cases:
        assert formula == by_hand == sum(p.numel() * p.element_size() for p in parts) == codecs.pack(parts).numel()


HOOK_CODECS = [TopK(ratio=0.01), TopK(ratio=0.3), Sign(), Sign(scaled=False), Sign(zeros="plus"), QSGD(levels=127), QSGD(levels=1000)]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("codec", HOOK_CODECS)
def test_hook_payload_bytes_is_what_the_hook_packs(n: int, codec: TopK | Sign | QSGD) -> None:
    payload = encode_bucket(CompressionState(codec), 0, randn(n))
    params = dataclasses.asdict(codec)
    assert payload.dtype == torch.uint8 and payload.numel() == hook_payload_bytes(codec.kind, n, params)


def test_unknown_codec_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="qsgd.*sign.*topk"):
        hook_payload_bytes("powersgd", 10)


# --- packing -------------------------------------------------------------------------


def test_pack_unpack_round_trips_any_dtypes_in_any_order() -> None:
    parts = [
        torch.tensor([1, 2, 3], dtype=torch.uint8),  # makes the float32 after it misaligned
        randn(5),
        torch.tensor([-7, 9], dtype=torch.int16),
        torch.tensor([2**40], dtype=torch.int64),
        torch.tensor([-128, 127], dtype=torch.int8),
        randn(3).double(),
    ]
    buf = codecs.pack(parts)
    assert buf.dtype == torch.uint8 and buf.numel() == sum(p.numel() * p.element_size() for p in parts)
    back = codecs.unpack(buf, [(p.dtype, p.numel()) for p in parts])
    for a, b in zip(parts, back, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_unpack_reads_rows_of_a_gathered_buffer_with_an_odd_row_size() -> None:
    x = [randn(13, seed=r) for r in range(3)]
    rows = torch.stack([codecs.pack(codecs.sign_encode(v, zeros="plus")) for v in x])  # 4 + 2 = 6 bytes per row
    for r, row in enumerate(rows):
        parts = codecs.unpack(row, codecs.sign_specs(13, "plus"))
        want = codecs.sign_decode(codecs.sign_encode(x[r], zeros="plus"), 13)
        torch.testing.assert_close(codecs.sign_decode(parts, 13), want)


def test_unpack_rejects_a_buffer_of_the_wrong_size() -> None:
    with pytest.raises(ValueError, match="12 bytes"):
        codecs.unpack(torch.zeros(11, dtype=torch.uint8), [(torch.float32, 3)])


# --- error feedback (the hook's encode step, one process) ---------------------------


def contraction(codec: TopK | Sign, x: torch.Tensor) -> float:
    """q with ||C(x) - x|| = q ||x||: top-k keeps at least k/n of the energy, scaled sign ||x||_1^2/n."""
    n = x.numel()
    if isinstance(codec, TopK):
        return math.sqrt(1 - codecs.topk_count(n, codec.ratio) / n)
    return math.sqrt(max(0.0, 1 - float(x.abs().sum() ** 2 / (n * x.pow(2).sum()))))


@pytest.mark.parametrize("codec", [TopK(ratio=0.1), TopK(ratio=0.01), Sign()])
def test_error_feedback_makes_applied_updates_track_the_gradients(codec: TopK | Sign) -> None:
    n, steps = 1000, 300
    state = CompressionState(codec)
    gen = torch.Generator().manual_seed(0)
    sum_grad = torch.zeros(n, dtype=torch.float64)
    sum_applied = torch.zeros(n, dtype=torch.float64)
    residual_norms, g_max, q_max = [], 0.0, 0.0
    for _ in range(steps):
        g = torch.randn(n, generator=gen) + 0.5  # a drift, as real gradients have
        before = state.residuals.get(0, torch.zeros(n)).clone()
        payload = encode_bucket(state, 0, g)
        applied = codec.decode(codecs.unpack(payload, codec.specs(n)), n)
        sum_grad += g.double()
        sum_applied += applied.double()
        residual = state.residuals[0]
        # The gap between what was applied and what was computed is exactly the residual ...
        torch.testing.assert_close(sum_grad - sum_applied, residual.double(), atol=1e-3, rtol=1e-4)
        residual_norms.append(float(residual.norm()))
        g_max = max(g_max, float(g.norm()))
        q_max = max(q_max, contraction(codec, g + before))
    # ... and stays bounded: ||e_t+1|| <= q (||e_t|| + ||g_t||) gives sup ||e|| <= q/(1-q) max ||g||.
    assert max(residual_norms) <= q_max / (1 - q_max) * g_max * (1 + 1e-4)
    # In practice it plateaus: a residual growing linearly (dropped mass never sent) would double.
    half = steps // 2
    assert max(residual_norms[half:]) <= 1.25 * max(residual_norms[:half])


def test_without_error_feedback_there_is_no_residual_and_the_gap_grows() -> None:
    n, codec = 1000, TopK(ratio=0.01, error_feedback=False)
    state = CompressionState(codec)
    gap = torch.zeros(n)
    for _ in range(100):
        g = torch.full((n,), 0.5) + 0.01 * randn(n)
        gap += g - codec.decode(codecs.unpack(encode_bucket(state, 0, g), codec.specs(n)), n)
    assert not state.residuals and float(gap.norm()) > 0.8 * 100 * 0.5 * math.sqrt(n)


def test_residual_resets_when_a_bucket_changes_size() -> None:
    state = CompressionState(TopK(ratio=0.1))
    encode_bucket(state, 0, randn(100))
    assert state.residuals[0].numel() == 100 and state.residuals[0].abs().sum() > 0
    encode_bucket(state, 0, torch.zeros(60))  # DDP rebuilt its buckets: index 0 now holds 60 elements
    assert state.residuals[0].numel() == 60 and state.residuals[0].abs().sum() == 0


def test_qsgd_error_feedback_residual_is_the_quantization_error() -> None:
    state = CompressionState(QSGD(levels=4, error_feedback=True), seed=5)
    g = randn(300)
    payload = encode_bucket(state, 3, g)
    decoded = state.codec.decode(codecs.unpack(payload, state.codec.specs(300)), 300)
    torch.testing.assert_close(state.residuals[3], g - decoded)


@pytest.mark.parametrize("n", [1, 8, 13, 64])
def test_pack_bits_pads_any_length_of_bools(n: int) -> None:
    mask = torch.rand(n, generator=torch.Generator().manual_seed(n)) > 0.5
    packed = codecs.pack_bits(mask)
    assert packed.numel() == (n + 7) // 8
    assert torch.equal(codecs.unpack_bits(packed, n).bool(), mask)

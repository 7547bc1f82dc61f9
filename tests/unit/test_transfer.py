"""Transfer packing: bitmask-sparse float and integer tensors, quantized weights rebuilt exactly, exact byte counts."""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn

from bench.models.sizing import sparse_bytes
from bench.workloads.transfer import Bitmask, Quantized, Subclass, decode_state, digest, encode_state, serialize
from tests.unit.tiny_models import apply


def two_linears(seed: int = 0) -> nn.Sequential:
    """Every state tensor has >= 64 elements, so the packer and `sparse_bytes` decide alike."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(128, 64), nn.Linear(64, 128)).eval()


def round_trip(state: dict[str, object]) -> dict[str, object]:
    """Encode, serialize, deserialize and decode, as rank 0 and a receiver do."""
    encoded, _ = encode_state(state)
    return decode_state(torch.load(io.BytesIO(serialize(encoded)), weights_only=False))


def test_an_int8_tensor_goes_as_bitmask_with_exact_bytes() -> None:
    t = torch.zeros(1000, dtype=torch.int8)
    t[::4] = 7  # 250 non-zeros: 125 + 250 bytes instead of 1000
    encoded, counts = encode_state({"w": t, "dense": torch.ones(1000, dtype=torch.int8)})
    assert isinstance(encoded["w"], Bitmask) and encoded["w"].values.dtype == torch.int8
    assert counts == {"sparse_tensors": 1, "dense_tensors": 1, "payload_tensor_bytes": 125 + 250 + 1000}
    assert torch.equal(round_trip({"w": t})["w"], t)


def test_pruned_int8_weight_only_model_is_packed_and_rebuilt() -> None:
    model = apply("prune_l1(amount=0.5)+quant_int8_wo", two_linears()).model
    state = model.state_dict()
    encoded, counts = encode_state(state)
    weight = encoded["0.weight"]
    assert isinstance(weight, Subclass) and isinstance(weight.inner["qdata"], Bitmask)
    assert weight.inner["qdata"].values.numel() == 64 * 128 // 2  # pruned zeros stay integer zeros
    # Two int8 weights and their all-zero zero points go sparse; scales and biases dense.
    assert (counts["sparse_tensors"], counts["dense_tensors"]) == (4, 4)
    assert counts["payload_tensor_bytes"] == sparse_bytes(model)
    received = round_trip(state)
    assert type(received["0.weight"]) is type(state["0.weight"])
    assert torch.equal(received["0.weight"].dequantize(), state["0.weight"].dequantize())
    assert digest(received) == digest(state)


def test_pruned_dynamic_int8_model_is_packed_and_rebuilt() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao eager quantization's deprecation warning
        model = apply("prune_l1(amount=0.5)+quant_dynamic_int8(per_channel=true)", two_linears()).model
        state = model.state_dict()
        key = "0._packed_params._packed_params"
        encoded, counts = encode_state(state)
        qweight = encoded[key][0]
        assert isinstance(qweight, Quantized) and isinstance(qweight.ints, Bitmask) and qweight.axis == 0
        received = round_trip(state)
        original, got = state[key][0], received[key][0]
        assert got.qscheme() == original.qscheme() and torch.equal(got.int_repr(), original.int_repr())
        assert torch.equal(got.q_per_channel_scales(), original.q_per_channel_scales())
        assert digest(received) == digest(state)


def test_pruned_float_model_round_trips_and_negative_zeros_hash_as_zeros() -> None:
    state = apply("prune_l1(amount=0.5)", two_linears()).model.state_dict()
    assert bool(torch.signbit(state["0.weight"][state["0.weight"] == 0]).any())  # w x 0 kept the sign of w
    received = round_trip(state)
    assert torch.equal(received["0.weight"], state["0.weight"]) and digest(received) == digest(state)
    received["0.weight"][received["0.weight"] == 0] = 1e-30
    assert digest(received) != digest(state)


def test_tied_tensors_are_packed_once() -> None:
    w = torch.zeros(64, 64)
    w[0] = 1.0
    encoded, counts = encode_state({"embed": w, "head": w.detach()})
    assert encoded["embed"] is encoded["head"] and counts["sparse_tensors"] == 1
    assert counts["payload_tensor_bytes"] == 64 * 64 // 8 + 64 * 4


def test_digest_sees_one_changed_element() -> None:
    state = two_linears().state_dict()
    before = digest(state)
    state["1.bias"][3] += 1e-6
    assert digest(state) != before

"""The compression suite's FLOP floor: tokens forwarded from a row's protocol, and the ratio's arithmetic."""

from __future__ import annotations

import json

import pandas as pd

from bench.investigations.eval_floor import floors, tokens_forwarded


def test_non_overlapping_windows_forward_each_token_once_and_sliding_ones_about_twice() -> None:
    assert tokens_forwarded({"tokens_read": 16384, "window": 512, "stride": 512}) == 16384
    assert tokens_forwarded({"tokens_read": 16384, "window": 512, "stride": 256}) == 63 * 512


def test_the_floor_is_two_flops_per_parameter_per_token_at_the_given_rate() -> None:
    protocol = json.dumps({"tokens_read": 1024, "window": 512, "stride": 512})
    rows = pd.DataFrame([
        {"strategy": "baseline", "status": "ok", "workload": "infer", "accuracy_protocol": protocol, "phase_eval_s": 3.0,
         "metrics": "{}"},
        {"strategy": "cast_fp16", "status": "ok", "workload": "infer", "accuracy_protocol": protocol, "phase_eval_s": 12.0,
         "metrics": json.dumps({"kernel_note": "no fp16"})},
        {"strategy": "x", "status": "ok", "workload": "transfer", "accuracy_protocol": None, "phase_eval_s": 1.0, "metrics": "{}"},
    ])  # fmt: skip
    found = floors(rows, params=1_000_000, gflops=1.024)  # 2 * 1e6 * 1024 / 1.024e9 = 2 s
    assert [(f.strategy, f.floor_s, f.ratio, f.kernel_note) for f in found] == [
        ("baseline", 2.0, 1.5, None), ("cast_fp16", 2.0, 6.0, "no fp16")
    ]  # fmt: skip

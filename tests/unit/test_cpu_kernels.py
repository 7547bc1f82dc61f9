"""The CPU kernel benchmark: every set-up runs, dynamic int8 engines are checked against the default's logits."""

from __future__ import annotations

import pytest
import torch

from bench.benchmarks import cpu_kernels


def test_the_benchmark_times_every_strategy_engine_and_linear(capsys: pytest.CaptureFixture[str]) -> None:
    assert cpu_kernels.main(["--model", "gpt2-tiny", "--tokens", "16", "--rounds", "2",
                             "--strategies", "baseline,quant_dynamic_int8,cast_bf16"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| set-up")]
    engines = [e for e in torch.backends.quantized.supported_engines if e not in ("none", torch.backends.quantized.engine)]
    assert len(rows) == 3 + len(engines) + 3  # strategies, other engines, three Linears
    assert rows[0].startswith("| baseline |") and "| 1.00 |" in rows[0]
    if "fbgemm" in engines:  # x86 dispatches to fbgemm for these shapes: the same logits
        assert "logits equal the default engine's" in next(r for r in rows if "engine fbgemm" in r)
    assert "GFLOP/s" in out


def test_a_strategy_is_applied_to_a_copy_as_infer_applies_it() -> None:
    from bench.contracts import TrialConfig
    from bench.models.zoo import MODELS, build_model

    model = build_model(MODELS.get("gpt2-tiny"), seed=0)
    cfg = TrialConfig(suite="t", strategy="cast_bf16", model="gpt2-tiny", workload="infer")
    copy = cpu_kernels.compressed(model, cfg)
    assert next(copy.parameters()).dtype == torch.bfloat16 and next(model.parameters()).dtype == torch.float32

"""Benchmark: the CPU kernels behind the compression suite's evaluation, one perplexity window at a time.

    python -m bench.benchmarks.cpu_kernels [--model smollm2-135m] [--tokens 512] [--rounds 5]
                                           [--strategies baseline,quant_dynamic_int8,...]

Evaluation is most of the compression suite's time (its `phase_eval_s`): every strategy's
perplexity is one forward pass per `tokens`-token window. This times that forward pass, on
this machine, for what the suite runs and for the alternatives torch offers:

- each of `--strategies`, applied to the model as `infer` applies it (MODEL, then PRECISION);
- `quant_dynamic_int8` under every quantized engine torch was built with
  (`torch.backends.quantized.engine`; the suite runs the default), with whether its logits
  equal the default engine's to the last bit: a faster engine that computes something else
  is another quantization, not a faster kernel for this one;
- one Linear of the model's MLP shape (tokens x hidden -> intermediate): fp32 `F.linear`
  (MKL), int8 weights dequantized then `F.linear`, and torch's int8 weight-only kernel
  `torch._weight_int8pack_mm`; and the fp32 GFLOP/s of the model's forward pass.

Every set-up runs once per round, in an order rotated by the round, after one untimed call;
the table gives the median of the rounds, their range, and the ratio to fp32 (`baseline`).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from bench.contracts import TrialConfig
from bench.models.zoo import MODELS
from bench.strategies import Aspect, TrialState, parse

DEFAULT_STRATEGIES = ("baseline", "quant_dynamic_int8", "quant_int8_wo", "quant_intx_wo(bits=4)", "cast_bf16", "cast_fp16")


@dataclass(frozen=True, slots=True)
class SetUp:
    """One timed thing: a name and a call that runs it once."""

    name: str
    run: Callable[[], Any]
    note: str = ""


def compressed(model: nn.Module, cfg: TrialConfig) -> nn.Module:
    """A copy of `model` with `cfg.strategy` applied as the infer workload applies it."""
    state = TrialState(cfg=cfg, env=None, spec=MODELS.get(cfg.model), model=copy.deepcopy(model))  # type: ignore[arg-type]
    comp = parse(cfg.strategy)
    for phase in (Aspect.MODEL, Aspect.PRECISION):
        comp.apply(phase, state)
    return state.model.eval()


@contextmanager
def engine(name: str) -> Iterator[None]:
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = old


def forward(model: nn.Module, ids: torch.Tensor) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        with torch.inference_mode():
            return model(input_ids=ids).logits.float()

    return run


def model_set_ups(model: nn.Module, name: str, ids: torch.Tensor, strategies: list[str]) -> list[SetUp]:
    """The strategies' forward passes, and dynamic int8 under every engine but the default."""
    cfg = TrialConfig(suite="cpu_kernels", strategy="baseline", model=name, workload="infer")
    out = [SetUp(s, forward(compressed(model, dataclasses.replace(cfg, strategy=s)), ids)) for s in strategies]
    default = torch.backends.quantized.engine
    listed = next((x for x in out if x.name == "quant_dynamic_int8"), None)  # quantized once, not again here
    reference = (listed.run if listed else forward(compressed(model, dataclasses.replace(cfg, strategy="quant_dynamic_int8")), ids))()
    for other in [e for e in torch.backends.quantized.supported_engines if e not in ("none", default)]:
        with engine(other):
            run = forward(compressed(model, dataclasses.replace(cfg, strategy="quant_dynamic_int8")), ids)
            equal = torch.equal(run(), reference)

        def timed(run: Callable[[], torch.Tensor] = run, other: str = other) -> torch.Tensor:
            with engine(other):
                return run()

        note = "logits equal the default engine's" if equal else "logits differ from the default engine's"
        out.append(SetUp(f"quant_dynamic_int8, engine {other}", timed, note))
    return out


def linear_set_ups(tokens: int, hidden: int, intermediate: int) -> list[SetUp]:
    """One MLP-shaped Linear three ways (float32 activations, per-row scales for int8)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, hidden, generator=g)
    w = torch.randn(intermediate, hidden, generator=g)
    w8 = torch.randint(-127, 128, (intermediate, hidden), dtype=torch.int8, generator=g)
    scales = torch.rand(intermediate, generator=g)
    shape = f"{tokens}x{hidden} @ {hidden}x{intermediate}"
    return [
        SetUp(f"Linear {shape}, fp32", lambda: F.linear(x, w)),
        SetUp(f"Linear {shape}, int8 weights dequantized, then fp32", lambda: F.linear(x, w8.float() * scales[:, None])),
        SetUp(f"Linear {shape}, torch._weight_int8pack_mm", lambda: torch._weight_int8pack_mm(x, w8, scales)),
    ]


def measure(set_ups: list[SetUp], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each set-up, one call per round, order rotated by the round."""
    for s in set_ups:
        s.run()  # untimed: allocator, kernel and weight-packing caches
    times: dict[str, list[float]] = {s.name: [] for s in set_ups}
    for r in range(rounds):
        for s in set_ups[r % len(set_ups) :] + set_ups[: r % len(set_ups)]:
            t0 = time.perf_counter()
            s.run()
            times[s.name].append(time.perf_counter() - t0)
    return times


def flops_per_token(model: nn.Module, tokens: int) -> float:
    """2 x the weights a token passes through (every Linear or GPT-2 Conv1D, the tied head included), plus attention's two matmuls."""
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, Conv1D)))
    cfg = model.config
    attention = 2 * 2 * cfg.num_hidden_layers * cfg.hidden_size * tokens / 2  # QK^T and AV, causal: half the keys on average
    return 2 * linear + attention


def table(set_ups: list[SetUp], times: dict[str, list[float]], baseline: str) -> str:
    base = statistics.median(times[baseline]) if baseline in times else None
    lines = ["| set-up | median ms | range ms | vs fp32 | note |", "|---|---|---|---|---|"]
    for s in set_ups:
        t = times[s.name]
        med = statistics.median(t)
        ratio = f"{med / base:.2f}" if base and not s.name.startswith("Linear") else ""
        lines.append(f"| {s.name} | {1e3 * med:.1f} | {1e3 * min(t):.1f}-{1e3 * max(t):.1f} | {ratio} | {s.note} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.benchmarks.cpu_kernels", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tokens", type=int, default=512, help="tokens per forward pass (the suite's perplexity window)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES))
    args = p.parse_args(argv)
    from bench.workloads.infer import load_model

    spec = MODELS.get(args.model)
    model, _ = load_model(spec, seed=0)
    model.eval()
    ids = torch.randint(0, spec.vocab_size, (1, args.tokens), generator=torch.Generator().manual_seed(0))
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    hidden = model.config.hidden_size
    intermediate = getattr(model.config, "intermediate_size", None) or 4 * hidden  # GPT-2: n_inner unset means 4x
    set_ups = [*model_set_ups(model, args.model, ids, strategies), *linear_set_ups(args.tokens, hidden, intermediate)]
    times = measure(set_ups, args.rounds)
    print(f"{args.model}, one forward pass of {args.tokens} tokens; {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, default quantized engine {torch.backends.quantized.engine}; "
          f"{args.rounds} rounds\n")  # fmt: skip
    print(table(set_ups, times, "baseline"))
    if "baseline" in times:
        flops = flops_per_token(model, args.tokens) * args.tokens
        print(f"\nfp32 forward: {flops / statistics.median(times['baseline']) / 1e9:.0f} GFLOP/s "
              f"({flops / 1e9:.1f} GFLOP per pass, counted from the Linear weights and attention)")  # fmt: skip
    linear = next(s for s in set_ups if s.name.startswith("Linear") and s.name.endswith("fp32"))
    n = 2 * args.tokens * hidden * intermediate
    print(f"fp32 Linear alone: {n / statistics.median(times[linear.name]) / 1e9:.0f} GFLOP/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

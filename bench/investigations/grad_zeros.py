"""Benchmark: how much of a train step's gradient is exactly zero, per parameter, on the synthetic source.

    python -m bench.investigations.grad_zeros [--model gpt2-tiny] [--states 64] [--branching 4] [--steps 0]

One process, no DDP: build the model as a trial does, take `steps` AdamW steps (lr 3e-3) on
the train stream, then print, for each parameter with exact zeros in the next batch's
gradient, the share of zero elements and of all-zero rows, and the share of the whole flat
gradient (what a DDP bucket, and so the sign codec, sees) that is exactly zero. The sign
codec's treatment of exact zeros only matters where this share is not negligible.
"""

from __future__ import annotations

import argparse

import torch

from bench.contracts import DataConfig, TrialConfig
from bench.models.zoo import MODELS, build_model
from bench.workloads.common import batches
from bench.workloads.sources import MarkovChain


def zero_shares(model: torch.nn.Module) -> tuple[dict[str, tuple[float, float]], float]:
    """(param -> (zero element share, all-zero row share)) for params with zeros, and the flat share."""
    out, zeros, total = {}, 0, 0
    for name, p in model.named_parameters():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        z = g == 0
        zeros, total = zeros + int(z.sum()), total + z.numel()
        if z.any():
            rows = float(z.reshape(z.shape[0], -1).all(dim=1).float().mean()) if g.dim() > 1 else float("nan")
            out[name] = (float(z.float().mean()), rows)
    return out, zeros / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gpt2-tiny")
    ap.add_argument("--states", type=int, default=64)
    ap.add_argument("--branching", type=int, default=4)
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--zipf", type=float, default=None, help="data.zipf (the full-vocabulary source)")
    args = ap.parse_args()
    data = DataConfig(states=args.states, branching=args.branching, **({} if args.zipf is None else {"zipf": args.zipf}))
    cfg = TrialConfig(suite="grad_zeros", strategy="baseline", model=args.model, workload="train", data=data)
    spec = MODELS.get(cfg.model)
    model = build_model(spec, cfg.seed)
    chain = MarkovChain.from_config(cfg.data)
    train = batches(cfg, chain, spec.causal, "train", 0, args.steps + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for b in train:
        opt.zero_grad(set_to_none=True)
        model(input_ids=b.input_ids, labels=b.labels).loss.backward()
        if b is not train[-1]:
            opt.step()
    per_param, flat = zero_shares(model)
    print(f"{args.model}, data={data}, after {args.steps} steps: {flat:.4f} of the flat gradient is exactly 0")
    for name, (elems, rows) in per_param.items():
        print(f"  {name}: {elems:.4f} of elements, {rows:.4f} of rows")


if __name__ == "__main__":
    main()

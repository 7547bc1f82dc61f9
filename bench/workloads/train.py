"""`train`: forward, backward and optimizer step of a language model under data parallelism."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from bench.comm.cost_model import ddp_ops
from bench.comm.profile import profile_steps
from bench.distributed.env import RankEnv
from bench.errors import BenchError
from bench.runner.config import TrialConfig
from bench.strategies import Composition, Phase, TrialState
from bench.trackers.window import Window
from bench.workloads.common import batches, build_state, evaluate
from bench.workloads.data import LMBatch, MarkovChain


def wrap_ddp(state: TrialState) -> None:
    """The default parallel layout: replicate the model, all-reduce gradients (DDP)."""
    env = state.env
    device_ids = [env.device.index] if env.device.type == "cuda" else None
    state.wrapped = DDP(state.model, device_ids=device_ids, **state.ddp_options)
    state.wrapper = "ddp"


def analytic_ops(state: TrialState, comp: Composition) -> dict[str, float] | None:
    """Cost model of one optimizer step per rank (op -> bytes): the strategy's, else DDP's."""
    for s in reversed(comp.strategies):
        ops = s.analytic_ops(state)
        if ops is not None:
            return ops
    return ddp_ops(state) if state.wrapper == "ddp" else None


def check_wire_dtype(comp: Composition, records: list[dict[str, Any]], state: TrialState) -> None:
    """Fail the trial if a comm hook's all_reduce carried another dtype than it promises."""
    sent = sorted({r["dtype"] for r in records if r["op"] == "all_reduce" and r["dtype"].startswith(("float", "bfloat"))})
    state.metrics["all_reduce_dtypes"] = sent
    for s in comp.strategies:
        expected = getattr(s, "wire_dtype", None)
        if expected and records and sent != [expected]:
            raise RuntimeError(f"{s.name} should all-reduce {expected} but the flight recorder saw {sent}")


def _step(state: TrialState, optimizer: torch.optim.Optimizer, micro: list[LMBatch]) -> torch.Tensor:
    """One optimizer step over `micro` micro-batches; DDP syncs gradients on the last only."""
    module = state.train_module
    total = torch.zeros((), device=state.env.device)
    for j, b in enumerate(micro):
        last = j == len(micro) - 1
        ctx = module.no_sync() if (not last and isinstance(module, DDP)) else nullcontext()
        with ctx:
            with state.autocast():
                loss = module(input_ids=b.input_ids, labels=b.labels).loss / len(micro)
            loss.backward()
        total += loss.detach()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total


OPTIMIZERS = ("adamw", "sgd")


def make_optimizer(cfg: TrialConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """`options.optimizer`: "adamw" (default) or "sgd" (`options.momentum`, default 0.9), at `lr`.

    Error feedback (top-k, signSGD, QSGD) is analysed for SGD, whose step is linear in the
    gradient; Adam's per-element normalisation is not (the 1-bit Adam paper's point), so
    both are offered.
    """
    name = cfg.options.get("optimizer", "adamw")
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=float(cfg.options.get("momentum", 0.9)))
    raise BenchError(f"options.optimizer {name!r} is not one of {', '.join(OPTIMIZERS)}")


def run(cfg: TrialConfig, comp: Composition, env: RankEnv) -> dict[str, Any]:
    state = build_state(cfg, comp, env, (Phase.MODEL, Phase.PRECISION, Phase.LAYOUT))
    if state.wrapped is None:
        wrap_ddp(state)
    comp.apply(Phase.COMM, state)
    comp.apply(Phase.LOOP, state)

    chain = MarkovChain.from_config(cfg.data)
    total_steps = cfg.warmup_steps + cfg.steps + cfg.profile_steps
    k = state.micro_steps
    train = [b.to(env.device) for b in batches(cfg, chain, state.spec.causal, "train", env.rank, total_steps * k)]
    held_out = batches(cfg, chain, state.spec.causal, "eval", 0, cfg.eval_batches)
    optimizer = make_optimizer(cfg, state.train_module.parameters())
    losses: list[torch.Tensor] = []

    def step() -> None:
        i = len(losses)
        losses.append(_step(state, optimizer, train[i * k : (i + 1) * k]))

    window = Window(env.device, env.backend, track_comm=cfg.track_comm)
    out = window.measure(step, warmup=cfg.warmup_steps, steps=cfg.steps)
    check_wire_dtype(comp, out["comm_records"], state)
    out["train_losses"] = [float(x) for x in losses]
    out["accuracy"] = evaluate(state.model, chain, held_out, env.device)
    # After the evaluation, so every strategy is evaluated after the same number of steps.
    out["profile"] = profile_steps(step, cfg.profile_steps, env.device)
    out["tokens_per_step"] = cfg.batch_size * cfg.seq_len * k
    out["analytic_ops"] = analytic_ops(state, comp)
    for s in comp.strategies:
        s.finish(state)
    out["metrics"] = state.metrics
    out["parallel"] = state.parallel
    out["wrapper"] = state.wrapper
    return out

"""`train`: forward, backward and optimizer step of a language model under data parallelism."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from bench.comm.cost_model import ddp_step
from bench.distributed.env import RankEnv
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


def analytic_logical_bytes(state: TrialState, comp: Composition) -> float | None:
    """Cost-model message bytes per rank per optimizer step: the strategy's, else DDP's."""
    for s in reversed(comp.strategies):
        value = s.analytic_logical_bytes(state)
        if value is not None:
            return value
    if state.wrapper != "ddp":
        return None
    return ddp_step(state.metrics["grad_bytes"], state.env.world_size, buffer_bytes=state.ddp_buffer_bytes)["logical"]


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


def run(cfg: TrialConfig, comp: Composition, env: RankEnv) -> dict[str, Any]:
    state = build_state(cfg, comp, env, (Phase.MODEL, Phase.PRECISION, Phase.LAYOUT))
    if state.wrapped is None:
        wrap_ddp(state)
    comp.apply(Phase.COMM, state)
    comp.apply(Phase.LOOP, state)

    chain = MarkovChain.from_config(cfg.data)
    total_steps = cfg.warmup_steps + cfg.steps
    k = state.micro_steps
    train = [b.to(env.device) for b in batches(cfg, chain, state.spec.causal, "train", env.rank, total_steps * k)]
    held_out = batches(cfg, chain, state.spec.causal, "eval", 0, cfg.eval_batches)
    optimizer = torch.optim.AdamW(state.train_module.parameters(), lr=cfg.lr)

    window = Window(env.device, env.backend)
    losses: list[torch.Tensor] = []
    for i in range(total_steps):
        if i == cfg.warmup_steps:
            window.start()
        micro = train[i * k : (i + 1) * k]
        if i >= cfg.warmup_steps:
            with window.timer.step():
                losses.append(_step(state, optimizer, micro))
        else:
            losses.append(_step(state, optimizer, micro))
        for fn in state.after_step:
            fn(i)
    out = window.stop(cfg.steps)
    out["train_losses"] = [float(x) for x in losses]
    out["tokens_per_step"] = cfg.batch_size * cfg.seq_len * k
    out["accuracy"] = evaluate(state.model, chain, held_out, env.device)
    out["analytic_logical_per_rank"] = analytic_logical_bytes(state, comp)
    out["metrics"] = state.metrics
    out["parallel"] = state.parallel
    out["wrapper"] = state.wrapper
    return out

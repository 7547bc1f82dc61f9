"""`infer`: forward (prefill) latency at batch x seq, and greedy generation tokens/s for causal LMs."""

from __future__ import annotations

import time
from typing import Any

import torch

from bench.distributed.env import RankEnv
from bench.runner.config import TrialConfig
from bench.strategies import Composition, Phase
from bench.trackers.latency import sync
from bench.trackers.window import Window
from bench.workloads.common import batches, build_state, evaluate
from bench.workloads.data import MarkovChain

GENERATE_REPEATS = 3


def run(cfg: TrialConfig, comp: Composition, env: RankEnv) -> dict[str, Any]:
    state = build_state(cfg, comp, env, (Phase.MODEL, Phase.PRECISION))
    model = state.model.eval()
    chain = MarkovChain.from_config(cfg.data)
    # Each rank serves its own requests (data-parallel inference): rank-specific batches.
    inputs = batches(cfg, chain, state.spec.causal, "infer", env.rank, 1)[0].to(env.device)
    held_out = batches(cfg, chain, state.spec.causal, "eval", 0, cfg.eval_batches)

    window = Window(env.device, env.backend, track_comm=cfg.track_comm)
    with torch.inference_mode():
        for i in range(cfg.warmup_steps + cfg.steps):
            if i == cfg.warmup_steps:
                window.start()
            if i >= cfg.warmup_steps:
                with window.timer.step(), state.autocast():
                    model(input_ids=inputs.input_ids)
            else:
                with state.autocast():
                    model(input_ids=inputs.input_ids)
        out = window.stop(cfg.steps)
        out["generate"] = _generate(cfg, state, inputs.input_ids) if state.spec.causal else None
    out["profile"] = None  # data-parallel inference issues no collectives
    out["analytic_ops"] = {}
    out["tokens_per_step"] = inputs.num_tokens
    out["accuracy"] = evaluate(model, chain, held_out, env.device)
    out["metrics"] = state.metrics
    out["parallel"] = {"dp": env.world_size, "tp": 1, "pp": 1}
    out["wrapper"] = None
    return out


def _generate(cfg: TrialConfig, state: Any, input_ids: torch.Tensor) -> dict[str, Any] | None:
    """Greedy decode of exactly `gen_tokens` new tokens after a half-length prompt."""
    if cfg.gen_tokens == 0:
        return None
    prompt = input_ids[:, : max(1, cfg.seq_len // 2)]
    limit = state.spec.max_positions - prompt.shape[1]
    new = min(cfg.gen_tokens, limit)
    kwargs = dict(
        max_new_tokens=new,
        min_new_tokens=new,
        do_sample=False,
        attention_mask=torch.ones_like(prompt),
        pad_token_id=state.spec.vocab_size - 1,
    )
    model = state.model
    with state.autocast():
        model.generate(prompt, **kwargs)  # warmup: allocator and kernel caches
        times = []
        for _ in range(GENERATE_REPEATS):
            sync(state.env.device)
            t0 = time.perf_counter()
            model.generate(prompt, **kwargs)
            sync(state.env.device)
            times.append(time.perf_counter() - t0)
    best = sorted(times)[len(times) // 2]
    return {
        "new_tokens": new,
        "batch": prompt.shape[0],
        "times_s": times,
        "tokens_per_s": prompt.shape[0] * new / best,
    }

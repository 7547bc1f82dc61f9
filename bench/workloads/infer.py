"""`infer`: prefill latency at batch x seq, greedy generate tokens/s, and what compression cost in accuracy.

Latency: the forward pass over `batch_size x seq_len` tokens (prefill), timed per step;
for causal LMs also greedy `generate` of `gen_tokens` new tokens (tokens/s).

Accuracy, against the same model before the composition's MODEL/PRECISION strategies
(the reference, kept in memory beside the compressed candidate):
- zoo models (random init, synthetic language): held-out loss and its Bayes floor, plus
  fidelity (mean KL of next-token distributions, top-1 agreement) on the held-out batches;
- pretrained causal LMs: sliding-window perplexity on a text corpus (WikiText-2 valid by
  default; `options.*` are `bench.eval.lm.CorpusOptions`: corpus, max_tokens, window,
  stride, fidelity_windows, sentences) and fidelity on the same text;
- pretrained sentence-embedding models: cosine similarity of mean-pooled embeddings of
  corpus lines to the reference's.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from torch import nn

from bench.contracts import Accuracy, Generate, Parallel, RankResult, TrialConfig
from bench.distributed.env import RankEnv
from bench.eval import lm
from bench.models.zoo import MODELS, ModelSpec, build_model
from bench.strategies import Composition, Phase, TrialState
from bench.trackers.latency import sync
from bench.trackers.window import Window
from bench.workloads import Workload, register
from bench.workloads.common import batches, build_state, evaluate
from bench.workloads.data import MarkovChain

GENERATE_REPEATS = 3


def load_reference(spec: ModelSpec, seed: int) -> tuple[nn.Module, Any]:
    """The uncompressed model and its tokenizer (None for zoo models)."""
    if spec.pretrained:
        from bench.models.pretrained import load_pretrained

        model, tokenizer, _source = load_pretrained(spec.pretrained)
        return model, tokenizer
    return build_model(spec, seed), None


def run(cfg: TrialConfig, comp: Composition, env: RankEnv) -> RankResult:
    opts: lm.CorpusOptions = WORKLOAD.options(cfg)
    spec = MODELS.get(cfg.model)
    reference, tokenizer = load_reference(spec, cfg.seed)
    reference = reference.to(env.device).eval()
    state = build_state(cfg, comp, env, (Phase.MODEL, Phase.PRECISION), model=copy.deepcopy(reference))
    model = state.model.eval()
    corpus = lm.corpus_ids(opts, tokenizer) if tokenizer is not None and spec.objective == "causal" else None
    inputs = prefill_inputs(cfg, opts, spec, env, tokenizer, corpus)

    def forward() -> None:
        with state.autocast():
            model(**inputs)

    with torch.inference_mode():
        window = Window(env.device, env.backend, track_comm=cfg.track_comm).measure(
            forward, warmup=cfg.warmup_steps, steps=cfg.steps
        )
        generate = _generate(cfg, state, inputs["input_ids"]) if spec.causal else None
        acc = accuracy(cfg, opts, spec, env, reference, state, tokenizer, corpus)
    return RankResult(
        rank=env.rank,
        window=window,
        tokens_per_step=int(inputs["input_ids"].numel()),
        accuracy=acc,
        metrics={**state.metrics, **lm.model_sizes(model)},
        analytic_ops={},  # data-parallel inference issues no collectives
        parallel=Parallel(dp=env.world_size),
        generate=generate,
    )


def prefill_inputs(
    cfg: TrialConfig, opts: lm.CorpusOptions, spec: ModelSpec, env: RankEnv, tokenizer: Any, corpus: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """The batch every step runs: corpus text for pretrained models when there is a corpus,
    the synthetic language otherwise. Each rank serves its own requests (its own slice)."""
    n = cfg.batch_size * cfg.seq_len
    if corpus is not None and corpus.numel() >= n * (env.rank + 1):
        ids = corpus[env.rank * n : (env.rank + 1) * n].view(cfg.batch_size, cfg.seq_len)
    elif spec.objective == "embedding" and tokenizer is not None:
        batch = lm.sentence_batch(opts, tokenizer, cfg.batch_size, cfg.seq_len)
        return {k: v.to(env.device) for k, v in batch.items()}
    else:
        chain = MarkovChain.from_config(cfg.data)
        ids = batches(cfg, chain, spec.causal, "infer", env.rank, 1)[0].input_ids
    return {"input_ids": ids.to(env.device)}


def accuracy(
    cfg: TrialConfig, opts: lm.CorpusOptions, spec: ModelSpec, env: RankEnv, reference: nn.Module, state: TrialState,
    tokenizer: Any, corpus: torch.Tensor | None,
) -> Accuracy:  # fmt: skip
    model = state.model
    if spec.objective == "embedding":
        if not tokenizer:
            return Accuracy()
        return Accuracy(**lm.embedding_fidelity(opts, cfg.seq_len, tokenizer, reference, model, env.device, state.autocast))
    if spec.pretrained:
        if corpus is None:
            return Accuracy(reason=opts.missing_reason())
        return Accuracy(**lm.corpus_accuracy(opts, reference, model, corpus, env.device, state.autocast))
    chain = MarkovChain.from_config(cfg.data)
    held_out = batches(cfg, chain, spec.causal, "eval", 0, cfg.eval_batches)
    result = evaluate(model, chain, held_out, env.device)
    fid = lm.batch_fidelity(reference, model, [b.input_ids for b in held_out], env.device, state.autocast)
    result.kl_mean, result.top1_agreement = fid.get("kl_mean"), fid.get("top1_agreement")
    return result


def _generate(cfg: TrialConfig, state: TrialState, input_ids: torch.Tensor) -> Generate | None:
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
    return Generate(new_tokens=new, batch=prompt.shape[0], times_s=times, tokens_per_s=prompt.shape[0] * new / best)


WORKLOAD = register(
    Workload(
        name="infer",
        summary="forward latency at batch x seq, plus greedy generate tokens/s for causal LMs",
        run=run,
        options_type=lm.CorpusOptions,
    )
)

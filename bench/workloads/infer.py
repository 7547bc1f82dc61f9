"""`infer`: prefill latency at batch x seq, greedy generate tokens/s, and what compression cost in accuracy.

Latency: the forward pass over `batch_size x seq_len` tokens (prefill), timed per step;
for causal LMs also greedy `generate` of `gen_tokens` new tokens (tokens/s).

Accuracy is measured against the reference: the same model before the composition's
MODEL/PRECISION strategies. The order keeps the reference out of the candidate's numbers:
1. load the model (it becomes the candidate) and decide the accuracy task: what it is
   measured on, and the key of the reference outputs it needs;
2. get those outputs from the disk cache (`bench.eval.reference`); only on a miss, load a
   second copy as the reference, run it, write its outputs, and free it;
3. apply the strategies to the candidate and measure it alone (peak memory, latency);
4. after the window, score the candidate against the cached outputs, memory-mapped.
A test holds this: on a cold cache the reference copy is dead when the window opens.
Tasks:
- zoo models (random init, synthetic language): held-out loss and its Bayes floor, plus
  fidelity (mean KL of next-token distributions, top-1 agreement) on the held-out batches;
- pretrained causal LMs: windowed perplexity on a text corpus (`options.*` are
  `bench.eval.lm.CorpusOptions`; the corpus is found by `bench.eval.corpus`) and fidelity
  on its first windows;
- pretrained sentence-embedding models: cosine of mean-pooled embeddings of corpus lines
  to the reference's.
Without a corpus, a pretrained model's accuracy is null with the reason.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bench.config import canonical_json
from bench.contracts import Accuracy, Generate, Parallel, RankResult, TrialConfig
from bench.distributed.env import RankEnv
from bench.eval import corpus as corpora
from bench.eval import lm, reference
from bench.meters import phases
from bench.meters.latency import sync
from bench.meters.window import Window
from bench.models.zoo import MODELS, ModelSpec, build_model, weights_source
from bench.strategies import Aspect, Composition, TrialState
from bench.strategies.metrics import Metric
from bench.workloads import Workload, register
from bench.workloads.common import (
    MODEL_METRICS,
    SIZE_METRICS,
    batches,
    build_state,
    evaluate_loss,
    held_out_accuracy,
    synthetic_protocol,
)
from bench.workloads.sources import LMBatch, MarkovChain

GENERATE_REPEATS = 3
ACCURACY_ASPECTS = (Aspect.MODEL, Aspect.PRECISION)  # the strategies infer applies: what can change accuracy
# The accuracy columns each kind of model reports (null with the reason when they cannot be measured).
_COLUMNS = {"causal": ("perplexity", "reference_perplexity", "kl_mean", "top1_agreement"), "embedding": ("embedding_cosine",)}


def load_model(spec: ModelSpec, seed: int) -> tuple[nn.Module, Any]:
    """The uncompressed model and its tokenizer (None for zoo models)."""
    if spec.pretrained:
        from bench.models.pretrained import load_pretrained

        model, tokenizer, _source = load_pretrained(spec.pretrained)
        return model, tokenizer
    return build_model(spec, seed), None


def reference_id(spec: ModelSpec, seed: int) -> dict[str, Any]:
    """What identifies the reference: the model, its weights in words, and a hash of what
    determines them (the weight files' names, sizes and mtimes; a zoo model's config)."""
    if spec.pretrained:
        from bench.models.pretrained import fingerprint

        determined_by: Any = fingerprint(spec.pretrained)
    else:
        determined_by = spec.config.to_dict()
    digest = hashlib.sha256(canonical_json(determined_by).encode()).hexdigest()[:16]
    return {"model": spec.name, "weights_source": weights_source(spec, seed), "weights_id": digest}


@dataclass(kw_only=True)
class HeldOut:
    """Zoo models: loss on held-out batches of the synthetic language, and fidelity to the reference on them."""

    cfg: TrialConfig
    chain: MarkovChain
    batches: list[LMBatch]
    device: torch.device
    reference_id: dict[str, Any]

    def protocol(self) -> dict[str, Any]:
        held_out = synthetic_protocol(self.cfg, self.batches)
        return {**held_out, "metric": f"{held_out['metric']}; KL and top-1 against the reference", "reference": self.reference_id}

    def key(self) -> dict[str, Any]:
        ids = [b.input_ids for b in self.batches]
        return {"task": "held-out", "ids_sha256": lm.ids_sha256(*ids), **self.protocol()}

    def outputs(self, model: nn.Module, autocast: lm.Autocast) -> lm.Outputs:
        """The logits on the held-out batches (under `autocast`) and the model's own mean loss on them."""
        with autocast():
            logits = lm.logits_of(model, [b.input_ids for b in self.batches], self.device)
        loss = evaluate_loss(model, self.batches, self.device) if self.batches else None
        return {**logits, **({} if loss is None else {"eval_loss": torch.tensor(loss, dtype=torch.float64)})}

    def compare(self, cand: lm.Outputs, ref: lm.Outputs) -> Accuracy:
        result = held_out_accuracy(self.chain, self.batches, float(cand["eval_loss"]) if "eval_loss" in cand else None)
        fid = lm.fidelity_between(cand, ref, len(self.batches))
        result.kl_mean, result.top1_agreement = fid.get("kl_mean"), fid.get("top1_agreement")
        result.protocol = self.protocol()
        return result


def accuracy_task(
    cfg: TrialConfig, opts: lm.CorpusOptions, spec: ModelSpec, env: RankEnv, tokenizer: Any
) -> lm.AccuracyTask | str:
    """The task accuracy is measured with, or why accuracy cannot be measured (no corpus)."""
    ref = reference_id(spec, cfg.seed)
    if not spec.pretrained:
        chain = MarkovChain.from_config(cfg.data)
        held_out = batches(cfg, chain, spec.causal, "eval", 0, cfg.eval_batches)
        return HeldOut(cfg=cfg, chain=chain, batches=held_out, device=env.device, reference_id=ref)
    found = corpora.find(opts.corpus)
    if isinstance(found, str):
        return found
    if spec.objective == "embedding":
        lines = lm.corpus_lines(found, opts.sentences)
        if not lines:
            return f"corpus {found.path} has no line of {lm.MIN_SENTENCE_WORDS}+ words to embed"
        batch = lm.sentence_batch(lines, tokenizer, cfg.seq_len)
        return lm.SentenceEmbeddings(corpus=found, batch=batch, seq_len=cfg.seq_len, device=env.device, reference_id=ref)
    return lm.CorpusPerplexity.read(opts, found, tokenizer, env.device, ref)


def _run_reference(task: lm.AccuracyTask, spec: ModelSpec, seed: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Load a fresh uncompressed copy, run it, and let it go when this returns."""
    model, _ = load_model(spec, seed)
    with torch.inference_mode():
        return lm.reference(task, model.to(device).eval())


def reference_outputs(
    task: lm.AccuracyTask | str, spec: ModelSpec, seed: int, device: torch.device
) -> tuple[reference.Entry | None, dict[str, Any]]:
    """The verified cache entry of the reference's outputs for `task` (None without one), and
    metrics on it: hit or computed, its key, and the seconds spent computing or verifying it."""
    if isinstance(task, str):
        return None, {}
    started = time.perf_counter()
    entry = reference.ensure(task.key(), device, lambda: _run_reference(task, spec, seed, device))
    return entry, {"reference_cache": entry.status, "reference_key": entry.key_hash, "reference_s": time.perf_counter() - started}


def run(cfg: TrialConfig, comp: Composition, env: RankEnv) -> RankResult:
    opts: lm.CorpusOptions = WORKLOAD.options(cfg)
    spec = MODELS.get(cfg.model)
    model, tokenizer = load_model(spec, cfg.seed)
    task = accuracy_task(cfg, opts, spec, env, tokenizer)
    phases.mark("eval")  # the reference's outputs: computed, or read from the cache
    entry, reference_metrics = reference_outputs(task, spec, cfg.seed, env.device)
    phases.mark("build")
    state = build_state(cfg, comp, env, ACCURACY_ASPECTS, model=model)
    # No other name may hold the uncompressed model: the window's start collects garbage and
    # trims the heap, so its peak is the candidate's alone.
    del model
    model = state.model.eval()
    inputs = prefill_inputs(cfg, opts, spec, env, tokenizer, task)

    def forward() -> None:
        with state.autocast():
            model(**inputs)

    with torch.inference_mode():
        window = Window(env.device, env.backend, track_comm=cfg.track_comm).measure(
            forward, warmup=cfg.warmup_steps, steps=cfg.steps
        )
        generate = _generate(cfg, state, inputs["input_ids"]) if spec.causal else None
        acc, source = _accuracy(task, comp, state, entry)
    return RankResult(
        rank=env.rank,
        window=window,
        tokens_per_step=int(inputs["input_ids"].numel()),
        accuracy=acc,
        metrics={**state.metrics, **lm.model_sizes(model), **reference_metrics, **source},
        analytic_ops={},  # data-parallel inference issues no collectives
        parallel=Parallel(dp=env.world_size),
        generate=generate,
    )


def _accuracy(
    task: lm.AccuracyTask | str, comp: Composition, state: TrialState, entry: reference.Entry | None
) -> tuple[Accuracy, dict[str, str]]:
    """The candidate's accuracy, and where its outputs came from.

    A composition with no MODEL or PRECISION strategy leaves the model as loaded: the
    candidate is the reference, and its outputs are the reference's (computed the same way
    on the same weights and inputs, so equal to the last bit; `tests/unit/test_accuracy.py`
    holds it). Its forward pass over the corpus is not run a second time.
    """
    if isinstance(task, str):
        return _no_accuracy(state.spec, task), {}
    assert entry is not None  # reference_outputs gives an entry for every task
    ref = reference.load(entry)
    if not any(s.aspect in ACCURACY_ASPECTS for s in comp.strategies):
        return task.compare(ref, ref), {"accuracy_outputs": "reference (no model or precision strategy: it is the reference)"}
    return lm.score(task, state.model, ref, state.autocast), {"accuracy_outputs": "candidate"}


def _no_accuracy(spec: ModelSpec, reason: str) -> Accuracy:
    return Accuracy(null_reasons=dict.fromkeys(_COLUMNS.get(spec.objective, ()), reason))


def prefill_inputs(
    cfg: TrialConfig, opts: lm.CorpusOptions, spec: ModelSpec, env: RankEnv, tokenizer: Any, task: lm.AccuracyTask | str
) -> dict[str, torch.Tensor]:
    """The batch every step runs: corpus text for pretrained models when there is a corpus,
    the synthetic language otherwise. Each rank serves its own requests (its own slice)."""
    n = cfg.batch_size * cfg.seq_len
    if isinstance(task, lm.CorpusPerplexity) and task.ids.numel() >= n * (env.rank + 1):
        ids = task.ids[env.rank * n : (env.rank + 1) * n].view(cfg.batch_size, cfg.seq_len)
        return {"input_ids": ids.to(env.device)}
    if isinstance(task, lm.SentenceEmbeddings):
        lines = lm.corpus_lines(task.corpus, cfg.batch_size * (env.rank + 1))[env.rank * cfg.batch_size :]
        if len(lines) == cfg.batch_size:
            return {k: v.to(env.device) for k, v in lm.sentence_batch(lines, tokenizer, cfg.seq_len).items()}
    chain = MarkovChain.from_config(cfg.data)
    ids = batches(cfg, chain, spec.causal, "infer", env.rank, 1)[0].input_ids
    return {"input_ids": ids.to(env.device)}


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
        metrics=(
            *MODEL_METRICS,
            *SIZE_METRICS,
            Metric("reference_cache", str, doc="whether the reference's outputs were computed or read from the cache"),
            Metric("reference_key", str, doc="the cache key of the reference's outputs"),
            Metric("reference_s", float, "s", doc="seconds spent computing or verifying them"),
            Metric("accuracy_outputs", str, doc="whose outputs were scored: the candidate's, or the reference's own"),
        ),
    )
)

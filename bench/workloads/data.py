"""A deterministic synthetic language whose best achievable loss is known.

Tokens come from a seeded sparse Markov chain: every state has `branching` successors
with Dirichlet-drawn probabilities, one of them always `(i + 1) mod states` so the chain
is irreducible. Its entropy rate H = sum_i pi_i * H(P_i) is the lowest expected
next-token loss any causal model can reach; `causal_bayes_loss` and `masked_bayes_loss`
give the exact Bayes-optimal loss on a concrete batch (the latter by forward-backward),
so every training strategy's final loss can be read as a gap to a known floor.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

from bench.contracts import DataConfig

# Dense forward-backward is O(states^2) memory; above this the masked floor is not computed.
MAX_STATES_FOR_MASKED_FLOOR = 4096
MASK_PROB = 0.15


def stream_seed(*parts: object) -> int:
    """A 63-bit seed derived from any labels (seed, split, rank, step): streams never overlap."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass(frozen=True)
class MarkovChain:
    successors: torch.Tensor  # [states, branching] int64
    probs: torch.Tensor  # [states, branching] float64, rows sum to 1
    stationary: torch.Tensor  # [states] float64

    @classmethod
    def from_config(cls, cfg: DataConfig) -> MarkovChain:
        g = torch.Generator().manual_seed(cfg.seed)
        s, k = cfg.states, cfg.branching
        nxt = (torch.arange(s) + 1) % s
        # k-1 further successors per row, distinct from each other and from i+1.
        scores = torch.rand(s, s, generator=g)
        scores[torch.arange(s), nxt] = -1.0
        others = scores.topk(k - 1, dim=1).indices if k > 1 else torch.empty(s, 0, dtype=torch.long)
        successors = torch.cat([nxt[:, None], others], dim=1)
        gamma = torch.distributions.Gamma(torch.full((s, k), cfg.alpha, dtype=torch.float64), 1.0)
        torch.manual_seed(stream_seed(cfg.seed, "dirichlet"))  # Gamma samples from the global RNG
        weights = gamma.sample().clamp_min(1e-12)
        probs = weights / weights.sum(dim=1, keepdim=True)
        return cls(successors, probs, _stationary(successors, probs))

    @property
    def states(self) -> int:
        return self.successors.shape[0]

    def entropy_rate(self) -> float:
        """H = sum_i pi_i * H(P_i), in nats per token (the unit of cross-entropy loss)."""
        row_h = -(self.probs * self.probs.log()).sum(dim=1)
        return float((self.stationary * row_h).sum())

    def sample(self, batch: int, seq: int, seed: int) -> torch.Tensor:
        """`[batch, seq]` int64 tokens; the first token is drawn from the stationary law."""
        g = torch.Generator().manual_seed(seed)
        out = torch.empty(batch, seq, dtype=torch.long)
        out[:, 0] = torch.multinomial(self.stationary, batch, replacement=True, generator=g)
        for t in range(1, seq):
            rows = self.probs[out[:, t - 1]]
            pick = torch.multinomial(rows, 1, generator=g).squeeze(1)
            out[:, t] = self.successors[out[:, t - 1], pick]
        return out

    def transition_matrix(self) -> torch.Tensor:
        dense = torch.zeros(self.states, self.states, dtype=torch.float64)
        dense.scatter_(1, self.successors, self.probs)
        return dense

    def causal_bayes_loss(self, tokens: torch.Tensor) -> float:
        """Mean -log P(x_t | x_{t-1}) over t >= 1: the floor for a causal LM's loss on `tokens`."""
        prev, cur = tokens[:, :-1], tokens[:, 1:]
        match = self.successors[prev] == cur[..., None]
        p = (self.probs[prev] * match).sum(-1)
        return float(-p.log().mean())

    def masked_bayes_loss(self, tokens: torch.Tensor, mask: torch.Tensor) -> float | None:
        """Mean -log P(x_t | unmasked tokens) over masked t: the floor for MLM loss.

        Exact, by forward-backward over the chain with unmasked tokens observed. None
        (no floor) when the dense transition matrix would be too large.
        """
        if self.states > MAX_STATES_FOR_MASKED_FLOOR or not mask.any():
            return None
        trans = self.transition_matrix()
        total, count = 0.0, 0
        for x, m in zip(tokens, mask):
            post = _posterior(trans, self.stationary, x, m)
            idx = m.nonzero().squeeze(1)
            total += float(-post[idx, x[idx]].clamp_min(1e-300).log().sum())
            count += idx.numel()
        return total / count


def _stationary(successors: torch.Tensor, probs: torch.Tensor, iters: int = 10_000) -> torch.Tensor:
    """Power iteration on the lazy chain (I+P)/2, which shares P's stationary law and is aperiodic."""
    s = successors.shape[0]
    pi = torch.full((s,), 1.0 / s, dtype=torch.float64)
    for _ in range(iters):
        nxt = torch.zeros_like(pi).index_add_(0, successors.reshape(-1), (pi[:, None] * probs).reshape(-1))
        new = 0.5 * (pi + nxt)
        if float((new - pi).abs().sum()) < 1e-13:
            return new
        pi = new
    return pi


def _posterior(trans: torch.Tensor, prior: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """P(x_t = s | observed), shape [seq, states], observing x where mask is False."""
    seq, states = x.shape[0], trans.shape[0]

    def evidence(t: int) -> torch.Tensor:
        if mask[t]:
            return torch.ones(states, dtype=torch.float64)
        e = torch.zeros(states, dtype=torch.float64)
        e[x[t]] = 1.0
        return e

    alpha = torch.empty(seq, states, dtype=torch.float64)
    a = prior * evidence(0)
    alpha[0] = a / a.sum()
    for t in range(1, seq):
        a = (alpha[t - 1] @ trans) * evidence(t)
        alpha[t] = a / a.sum()
    beta = torch.ones(seq, states, dtype=torch.float64)
    for t in range(seq - 2, -1, -1):
        b = trans @ (beta[t + 1] * evidence(t + 1))
        beta[t] = b / b.sum()
    post = alpha * beta
    return post / post.sum(dim=1, keepdim=True)


def mask_tokens(tokens: torch.Tensor, mask_id: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MLM corruption: each position is masked with probability 0.15 (replaced by `mask_id`).

    Returns (inputs, labels with -100 on unmasked positions, mask). Always masks at least
    one position per row so every row contributes to the loss.
    """
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(tokens.shape, generator=g) < MASK_PROB
    first = torch.randint(0, tokens.shape[1], (tokens.shape[0],), generator=g)
    mask[torch.arange(tokens.shape[0]), first] = True
    inputs = tokens.masked_fill(mask, mask_id)
    labels = tokens.masked_fill(~mask, -100)
    return inputs, labels, mask


def uniform_loss(states: int) -> float:
    """Loss of a model that knows only the alphabet: log(states) nats."""
    return math.log(states)


@dataclass(frozen=True)
class LMBatch:
    """One batch for a language model: causal (labels = inputs) or masked (MLM)."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    tokens: torch.Tensor  # the uncorrupted sequence
    mask: torch.Tensor | None  # MLM positions, None for causal

    def to(self, device: torch.device) -> LMBatch:
        return LMBatch(self.input_ids.to(device), self.labels.to(device), self.tokens, self.mask)

    @property
    def num_tokens(self) -> int:
        return self.input_ids.numel()


def make_batch(chain: MarkovChain, causal: bool, batch: int, seq: int, seed: int) -> LMBatch:
    """A deterministic batch: the same (chain, seed) always gives the same tokens."""
    tokens = chain.sample(batch, seq, seed)
    if causal:
        return LMBatch(tokens, tokens.clone(), tokens, None)
    inputs, labels, mask = mask_tokens(tokens, mask_id=chain.states, seed=stream_seed(seed, "mask"))
    return LMBatch(inputs, labels, tokens, mask)


def bayes_loss(chain: MarkovChain, batch: LMBatch) -> float | None:
    """The Bayes-optimal loss on this batch, in the same units and positions as HF's loss."""
    if batch.mask is None:
        return chain.causal_bayes_loss(batch.tokens)
    return chain.masked_bayes_loss(batch.tokens, batch.mask)

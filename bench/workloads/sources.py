"""A deterministic synthetic language whose best achievable loss is known.

Tokens come from a seeded sparse Markov chain: every state has `branching` successors
with Dirichlet-drawn probabilities (the sparse law S). Two families:

- `data.zipf` unset: the successors are drawn uniformly, one of them always
  `(i + 1) mod states` so the chain is irreducible; P = S.
- `data.zipf = s`: the successors are drawn without replacement with popularity
  (j + 1)^-s, and every next-token law is smoothed with a Zipf background
  mu_j ∝ (j + 1)^-s (interpolation with a unigram, as in an n-gram LM):
  P = (1 - b) S + b mu, b = `data.background`. Every token can follow every token, so with
  `states` = vocab - 1 the chain covers the whole vocabulary, and the stationary marginal is
  Zipf-like (`zipf_fit` measures its exponent and coverage).

P is never materialised: every quantity below is computed from S and mu in
O(states * branching). Its entropy rate H = sum_i pi_i * H(P_i) is the lowest expected
next-token loss any causal model can reach; `causal_bayes_loss` and `masked_bayes_loss`
give the exact Bayes-optimal loss on a concrete batch (the latter by forward-backward over
the masked runs), so every training strategy's final loss can be read as a gap to a known
floor.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

from bench.contracts import DataConfig

MASK_PROB = 0.15
_GUMBEL_ROWS = 512  # rows per chunk of the Gumbel top-k draw: bounds its memory at 512 x states


def stream_seed(*parts: object) -> int:
    """A 63-bit seed derived from any labels (seed, split, rank, step): streams never overlap."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass(frozen=True)
class MarkovChain:
    successors: torch.Tensor  # [states, branching] int64
    probs: torch.Tensor  # [states, branching] float64, rows sum to 1: the sparse law S
    stationary: torch.Tensor  # [states] float64
    background: torch.Tensor | None = None  # [states] float64 mu; None: P = S
    mix: float = 0.0  # b in P = (1 - b) S + b mu

    @classmethod
    def from_config(cls, cfg: DataConfig) -> MarkovChain:
        g = torch.Generator().manual_seed(cfg.seed)
        s, k = cfg.states, cfg.branching
        if cfg.zipf is None:
            nxt = (torch.arange(s) + 1) % s
            # k-1 further successors per row, distinct from each other and from i+1.
            scores = torch.rand(s, s, generator=g)
            scores[torch.arange(s), nxt] = -1.0
            others = scores.topk(k - 1, dim=1).indices if k > 1 else torch.empty(s, 0, dtype=torch.long)
            successors = torch.cat([nxt[:, None], others], dim=1)
            background, mix = None, 0.0
        else:
            successors = _zipf_successors(s, k, cfg.zipf, g)
            background, mix = zipf_law(s, cfg.zipf), cfg.background
        gamma = torch.distributions.Gamma(torch.full((s, k), cfg.alpha, dtype=torch.float64), 1.0)
        torch.manual_seed(stream_seed(cfg.seed, "dirichlet"))  # Gamma samples from the global RNG
        weights = gamma.sample().clamp_min(1e-12)
        probs = weights / weights.sum(dim=1, keepdim=True)
        return cls(successors, probs, _stationary(successors, probs, background, mix), background, mix)

    @property
    def states(self) -> int:
        return self.successors.shape[0]

    def entropy_rate(self) -> float:
        """H = sum_i pi_i * H(P_i), in nats per token (the unit of cross-entropy loss).

        With a background, H(P_i) is sum_j -b mu_j log(b mu_j) over all j, corrected at the
        row's k successors, where P_ij = (1 - b) S_ij + b mu_j instead: O(states * k).
        """
        if self.background is None:
            row_h = -(self.probs * self.probs.log()).sum(dim=1)
        else:
            bg = self.mix * self.background
            at_succ = (1 - self.mix) * self.probs + bg[self.successors]
            plogp = bg * bg.log()
            row_h = -plogp.sum() + plogp[self.successors].sum(dim=1) - (at_succ * at_succ.log()).sum(dim=1)
        return float((self.stationary * row_h).sum())

    def zipf_fit(self) -> tuple[float, float]:
        """(exponent, coverage) of the stationary marginal: the least-squares slope of
        -log pi against log rank over every state, and the share of states with pi > 0."""
        pi = self.stationary.sort(descending=True).values
        keep = pi > 0
        x = torch.arange(1, self.states + 1, dtype=torch.float64)[keep].log()
        y = pi[keep].log()
        slope = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
        return -slope, float(keep.double().mean())

    def sample(self, batch: int, seq: int, seed: int) -> torch.Tensor:
        """`[batch, seq]` int64 tokens; the first token is drawn from the stationary law."""
        g = torch.Generator().manual_seed(seed)
        out = torch.empty(batch, seq, dtype=torch.long)
        out[:, 0] = torch.multinomial(self.stationary, batch, replacement=True, generator=g)
        for t in range(1, seq):
            rows = self.probs[out[:, t - 1]]
            pick = torch.multinomial(rows, 1, generator=g).squeeze(1)
            out[:, t] = self.successors[out[:, t - 1], pick]
            if self.background is not None:
                # Drawn for every row, so a row's stream does not depend on which others back off.
                back = torch.rand(batch, generator=g, dtype=torch.float64) < self.mix
                bg = torch.multinomial(self.background, batch, replacement=True, generator=g)
                out[:, t] = torch.where(back, bg, out[:, t])
        return out

    def transition_matrix(self) -> torch.Tensor:
        """Dense [states, states] P (for tests and small chains: O(states^2) memory)."""
        dense = torch.zeros(self.states, self.states, dtype=torch.float64)
        dense.scatter_(1, self.successors, self.probs)
        if self.background is not None:
            dense = (1 - self.mix) * dense + self.mix * self.background
        return dense

    def step_prob(self, prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        """P(cur | prev), elementwise over equally shaped index tensors."""
        match = self.successors[prev] == cur[..., None]
        p = (self.probs[prev] * match).sum(-1)
        if self.background is not None:
            p = (1 - self.mix) * p + self.mix * self.background[cur]
        return p

    def forward_step(self, alpha: torch.Tensor) -> torch.Tensor:
        """alpha P in O(states * k): a scatter-add over each state's successors (+ b mu sum(alpha))."""
        flow = (alpha[:, None] * self.probs).reshape(-1)
        moved = torch.zeros_like(alpha).index_add_(0, self.successors.reshape(-1), flow)
        if self.background is None:
            return moved
        return (1 - self.mix) * moved + self.mix * self.background * alpha.sum()

    def backward_step(self, v: torch.Tensor) -> torch.Tensor:
        """P v in O(states * k): a gather over each state's successors (+ b mu . v)."""
        out = (self.probs * v[self.successors]).sum(dim=1)
        if self.background is None:
            return out
        return (1 - self.mix) * out + self.mix * (self.background * v).sum()

    def causal_bayes_loss(self, tokens: torch.Tensor) -> float:
        """Mean -log P(x_t | x_{t-1}) over t >= 1: the floor for a causal LM's loss on `tokens`."""
        return float(-self.step_prob(tokens[:, :-1], tokens[:, 1:]).log().mean())

    def masked_bayes_loss(self, tokens: torch.Tensor, mask: torch.Tensor) -> float | None:
        """Mean -log P(x_t | unmasked tokens) over masked t: the floor for MLM loss.

        Exact, by forward-backward with the unmasked tokens observed. By the Markov property
        a run of masked positions depends only on the observed tokens just before and after
        it, so only the runs are swept: O(masked * states * k). None when nothing is masked.
        """
        if not mask.any():
            return None
        total, count = 0.0, 0
        for x, m in zip(tokens, mask):
            for start, end in _runs(m):
                post = self._run_posterior(x, start, end)
                hit = post[torch.arange(end - start), x[start:end]]
                total += float(-hit.clamp_min(1e-300).log().sum())
                count += end - start
        return total / count

    def _run_posterior(self, x: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """P(x_t = s | x_{start-1}, x_end) for t in [start, end), shape [end - start, states]."""
        n, states = end - start, self.states
        alpha = torch.empty(n, states, dtype=torch.float64)
        a = self.stationary.clone() if start == 0 else self.forward_step(_onehot(int(x[start - 1]), states))
        alpha[0] = a / a.sum()
        for t in range(1, n):
            a = self.forward_step(alpha[t - 1])
            alpha[t] = a / a.sum()
        beta = torch.ones(n, states, dtype=torch.float64)
        if end < x.shape[0]:
            b = self.backward_step(_onehot(int(x[end]), states))
            beta[n - 1] = b / b.sum()
        for t in range(n - 2, -1, -1):
            b = self.backward_step(beta[t + 1])
            beta[t] = b / b.sum()
        post = alpha * beta
        return post / post.sum(dim=1, keepdim=True)


def zipf_law(states: int, exponent: float) -> torch.Tensor:
    """mu_j ∝ (j + 1)^-exponent over j < states, float64, summing to 1."""
    w = torch.arange(1, states + 1, dtype=torch.float64).pow(-exponent)
    return w / w.sum()


def _onehot(i: int, n: int) -> torch.Tensor:
    e = torch.zeros(n, dtype=torch.float64)
    e[i] = 1.0
    return e


def _runs(mask: torch.Tensor) -> list[tuple[int, int]]:
    """Maximal [start, end) runs of True in a 1-D bool tensor."""
    out, start = [], None
    for t, m in enumerate([*mask.tolist(), False]):
        if m and start is None:
            start = t
        elif not m and start is not None:
            out.append((start, t))
            start = None
    return out


def _stationary(
    successors: torch.Tensor, probs: torch.Tensor, background: torch.Tensor | None, mix: float, iters: int = 10_000
) -> torch.Tensor:
    """Power iteration: without a background on the lazy chain (I+P)/2, which shares P's
    stationary law and is aperiodic; with one on P itself, which contracts at rate 1 - b."""
    s = successors.shape[0]
    pi = torch.full((s,), 1.0 / s, dtype=torch.float64)
    for _ in range(iters):
        nxt = torch.zeros_like(pi).index_add_(0, successors.reshape(-1), (pi[:, None] * probs).reshape(-1))
        new = 0.5 * (pi + nxt) if background is None else (1 - mix) * nxt + mix * background
        if float((new - pi).abs().sum()) < 1e-13:
            return new
        pi = new
    return pi


def _zipf_successors(s: int, k: int, exponent: float, g: torch.Generator) -> torch.Tensor:
    """k distinct successors per state, drawn without replacement with weight (j + 1)^-exponent.

    The first k distinct values of i.i.d. draws with replacement are a draw without
    replacement (each next one is w-weighted among those not yet taken). 4k draws per row
    almost always hold k distinct ones; the rare rows that do not are drawn again by Gumbel
    top-k (the top k of log w + Gumbel noise), which avoids an O(states^2) draw for all rows.
    """
    w = zipf_law(s, exponent)
    cand = torch.multinomial(w, s * 4 * k, replacement=True, generator=g).view(s, 4 * k)
    seen_before = (cand[:, :, None] == cand[:, None, :]).tril(diagonal=-1).any(dim=2)
    first = ~seen_before & (torch.cumsum(~seen_before, dim=1) <= k)
    short = first.sum(dim=1) < k
    out = torch.empty(s, k, dtype=torch.long)
    out[~short] = cand[~short][first[~short]].view(-1, k)
    if short.any():
        rows = int(short.sum())
        u = torch.rand(rows, s, generator=g, dtype=torch.float64).clamp_min_(1e-300)
        out[short] = (w.log() - u.log_().neg_().log_()).topk(k, dim=1).indices
    return out


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

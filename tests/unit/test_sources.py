"""The synthetic Markov source: stationarity, entropy rate, and exact Bayes floors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from bench.contracts import DataConfig
from bench.workloads.sources import MarkovChain, make_batch, mask_tokens, stream_seed


@pytest.fixture(scope="module")
def chain() -> MarkovChain:
    return MarkovChain.from_config(DataConfig(states=32, branching=3, alpha=0.7, seed=7))


def test_rows_are_distributions_and_stationary_is_fixed_point(chain: MarkovChain) -> None:
    torch.testing.assert_close(chain.probs.sum(1), torch.ones(32, dtype=torch.float64))
    p = chain.transition_matrix()
    torch.testing.assert_close(chain.stationary @ p, chain.stationary, atol=1e-10, rtol=0)
    assert abs(float(chain.stationary.sum()) - 1) < 1e-12


def test_successors_are_distinct_and_include_the_cycle(chain: MarkovChain) -> None:
    for i, row in enumerate(chain.successors.tolist()):
        assert len(set(row)) == len(row)
        assert row[0] == (i + 1) % chain.states


def test_entropy_rate_matches_the_empirical_causal_floor(chain: MarkovChain) -> None:
    # The Bayes loss on a long sample converges to the entropy rate (ergodic theorem).
    tokens = chain.sample(64, 512, seed=3)
    assert chain.causal_bayes_loss(tokens) == pytest.approx(chain.entropy_rate(), rel=0.02)
    assert 0 < chain.entropy_rate() < math.log(3)


def test_sampling_is_deterministic_and_seeded(chain: MarkovChain) -> None:
    assert torch.equal(chain.sample(4, 16, seed=1), chain.sample(4, 16, seed=1))
    assert not torch.equal(chain.sample(4, 16, seed=1), chain.sample(4, 16, seed=2))
    assert stream_seed(1, "train", 0, 5) != stream_seed(1, "train", 1, 5)


def test_every_sampled_transition_is_allowed(chain: MarkovChain) -> None:
    tokens = chain.sample(8, 64, seed=11)
    allowed = (chain.successors[tokens[:, :-1]] == tokens[:, 1:, None]).any(-1)
    assert bool(allowed.all())


@pytest.mark.parametrize("zipf", [None, 1.0])
@pytest.mark.parametrize("mask_list", [[True, False, True, True, False, True], [False, True, True, False, False, True]])
def test_masked_floor_equals_brute_force_posterior(zipf: float | None, mask_list: list[bool]) -> None:
    # Tiny chain: enumerate every completion of the masked positions and compare.
    c = MarkovChain.from_config(DataConfig(states=4, branching=2, alpha=1.0, seed=5, zipf=zipf))
    x = c.sample(1, 6, seed=9)[0]
    mask = torch.tensor(mask_list)
    p = c.transition_matrix()
    hidden = mask.nonzero().squeeze(1).tolist()
    weights: dict[tuple[int, ...], float] = {}
    for fill in itertools.product(range(4), repeat=len(hidden)):
        seq = x.clone()
        seq[hidden] = torch.tensor(fill)
        w = float(c.stationary[seq[0]]) * math.prod(float(p[seq[t - 1], seq[t]]) for t in range(1, 6))
        weights[fill] = w
    z = sum(weights.values())
    expected = 0.0
    for j, t in enumerate(hidden):
        marginal = sum(w for f, w in weights.items() if f[j] == int(x[t])) / z
        expected += -math.log(marginal)
    expected /= len(hidden)
    got = c.masked_bayes_loss(x[None], mask[None])
    assert got == pytest.approx(expected, rel=1e-9)


def test_masking_marks_at_least_one_position_and_labels_only_masked() -> None:
    tokens = torch.arange(40).reshape(4, 10)
    inputs, labels, mask = mask_tokens(tokens, mask_id=99, seed=1)
    assert bool(mask.any(1).all())
    assert bool((inputs[mask] == 99).all()) and bool((labels[~mask] == -100).all())
    assert torch.equal(labels[mask], tokens[mask])


def test_causal_batch_labels_are_inputs(chain: MarkovChain) -> None:
    b = make_batch(chain, causal=True, batch=2, seq=8, seed=4)
    assert torch.equal(b.input_ids, b.labels) and b.mask is None


# --- the full-vocabulary Zipf source (data.zipf) ----------------------------------------


@pytest.fixture(scope="module")
def zipf_chain() -> MarkovChain:
    return MarkovChain.from_config(DataConfig(states=48, branching=3, alpha=0.7, seed=7, zipf=1.0, background=0.25))


def test_zipf_chain_stationary_is_a_fixed_point_of_the_smoothed_law(zipf_chain: MarkovChain) -> None:
    p = zipf_chain.transition_matrix()
    torch.testing.assert_close(p.sum(1), torch.ones(48, dtype=torch.float64))
    assert bool((p > 0).all())  # every token can follow every token
    torch.testing.assert_close(zipf_chain.stationary @ p, zipf_chain.stationary, atol=1e-12, rtol=0)
    for i, row in enumerate(zipf_chain.successors.tolist()):
        assert len(set(row)) == 3, f"row {i} has repeated successors"


def test_zipf_entropy_rate_is_the_dense_formula_and_the_empirical_floor(zipf_chain: MarkovChain) -> None:
    p = zipf_chain.transition_matrix()
    dense = float((zipf_chain.stationary * -(p * p.log()).sum(1)).sum())
    assert zipf_chain.entropy_rate() == pytest.approx(dense, rel=1e-12)
    tokens = zipf_chain.sample(64, 512, seed=3)
    assert zipf_chain.causal_bayes_loss(tokens) == pytest.approx(dense, rel=0.02)
    # The causal floor on a batch is exactly -log P(x_t | x_t-1) read off the dense matrix.
    want = float(-p[tokens[:, :-1], tokens[:, 1:]].log().mean())
    assert zipf_chain.causal_bayes_loss(tokens) == pytest.approx(want, rel=1e-12)


def test_zipf_sample_frequencies_follow_the_stationary_law(zipf_chain: MarkovChain) -> None:
    tokens = zipf_chain.sample(64, 512, seed=5)
    counts = torch.bincount(tokens.reshape(-1), minlength=48).double()
    assert bool((counts > 0).all())  # the whole vocabulary occurs
    freq = counts / counts.sum()
    # 32k tokens: every frequency within 5 binomial standard errors of pi (plus a small slack).
    se = (zipf_chain.stationary * (1 - zipf_chain.stationary) / counts.sum()).sqrt()
    assert bool(((freq - zipf_chain.stationary).abs() < 5 * se + 1e-3).all())


def test_full_vocabulary_zipf_marginal() -> None:
    # The suites' setting on a 4096-token vocabulary: every token has mass, at least the
    # background's b * mu_j, and the rank-frequency slope is Zipf-like.
    c = MarkovChain.from_config(DataConfig(states=4095, branching=4, zipf=1.0, background=0.25))
    exponent, coverage = c.zipf_fit()
    assert coverage == 1.0
    assert c.background is not None and bool((c.stationary >= 0.25 * c.background * (1 - 1e-9)).all())
    assert 1.0 <= exponent <= 1.6
    assert 2.0 < c.entropy_rate() < math.log(4095)

"""The synthetic Markov source: stationarity, entropy rate, and exact Bayes floors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from bench.contracts import DataConfig
from bench.workloads.data import MarkovChain, make_batch, mask_tokens, stream_seed


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


def test_masked_floor_equals_brute_force_posterior() -> None:
    # Tiny chain: enumerate every completion of the masked positions and compare.
    c = MarkovChain.from_config(DataConfig(states=4, branching=2, alpha=1.0, seed=5))
    x = c.sample(1, 6, seed=9)[0]
    mask = torch.tensor([True, False, True, True, False, True])
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

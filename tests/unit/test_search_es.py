"""Evolution strategies: the estimator's property, learning on digits, parity across worker counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from escala.errors import UserError
from escala.search.es import EvolutionStrategy, centered_ranks, es_digits, noise


def test_centered_ranks():
    r = centered_ranks(torch.tensor([10.0, -3.0, 7.0, 1000.0]))
    assert r.tolist() == [pytest.approx(1 / 6), -0.5, pytest.approx(-1 / 6), 0.5]


def test_noise_is_reproducible_from_its_seed_and_differs_between_pairs():
    assert torch.equal(noise(1, 2, 3, 50), noise(1, 2, 3, 50))
    assert not torch.equal(noise(1, 2, 3, 50), noise(1, 2, 4, 50))


def test_antithetic_estimate_matches_the_true_gradient_of_a_quadratic():
    # For F(theta) = -|theta - c|^2 the antithetic difference is exactly linear in eps, so without
    # shaping the estimate is unbiased for the true gradient -2 (theta - c); check it with many pairs.
    dim = 8
    target = torch.linspace(-1, 1, dim)
    model = nn.Linear(dim, 1, bias=False)  # parameters: a row of 8 weights
    nn.init.zeros_(model.weight)

    def fitness(m, it):
        return -float(((m.weight.reshape(-1) - target) ** 2).sum())

    es = EvolutionStrategy(model, fitness, sigma=0.1, pairs=4000, shaping=False)
    theta = es.theta.detach().clone()
    fits = []
    for j in range(es.pairs):
        eps = noise(es.seed, 0, j, dim)
        fits.append([es._score(theta + es.sigma * eps), es._score(theta - es.sigma * eps)])
    g = es.gradient(torch.tensor(fits))
    true = -2 * (theta - target)
    cos = float(torch.dot(g, true) / (g.norm() * true.norm()))
    assert cos > 0.98, cos
    torch.testing.assert_close(g, true, atol=0.12, rtol=0.0)


def test_es_learns_digits_without_gradients():
    result = es_digits(iterations=20, pairs=20, sigma=0.05, lr=0.03)
    accs = [h["val_acc"] for h in result["history"]]
    assert accs[0] < 0.3 and accs[-1] > 0.4, accs  # 10 classes: chance is 0.1


@pytest.mark.distributed
@pytest.mark.timeout(120)
def test_two_workers_give_the_same_parameters_as_one():
    one = es_digits(iterations=3, workers=1, pairs=6)
    two = es_digits(iterations=3, workers=2, pairs=6)
    assert one["theta"] == two["theta"]  # bit-identical: only the scalar fitnesses travel
    assert [h["val_acc"] for h in one["history"]] == [h["val_acc"] for h in two["history"]]


def test_bad_settings():
    with pytest.raises(UserError, match="sigma > 0"):
        EvolutionStrategy(nn.Linear(2, 1), lambda m, i: 0.0, sigma=0)


def test_problem_size_options_and_step_time_apart_from_evaluation():
    result = es_digits(iterations=3, pairs=2, hidden=(8,), problem_options={"batch": 32})
    assert len(result["theta"]) == 64 * 8 + 8 + 8 * 10 + 10  # the 64-8-10 MLP
    h = result["history"]
    steps = [r["step_s"] for r in h]
    assert steps == sorted(steps) and all(r["step_s"] <= r["wall_s"] for r in h)

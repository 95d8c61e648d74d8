"""Evolution strategies on CartPole-v1 (gymnasium): returns improve; workers change nothing but time."""

from __future__ import annotations

import pytest
import torch

from escala.search.es import centered_ranks, es_cartpole

pytest.importorskip("gymnasium")


def test_tied_fitnesses_share_their_rank():
    # integer returns tie often; a tie must not read as a direction
    assert centered_ranks(torch.tensor([9.0, 9.0, 9.0, 20.0])).tolist() == pytest.approx([-1 / 6] * 3 + [0.5])


@pytest.mark.timeout(60)
def test_es_improves_the_cartpole_return():
    result = es_cartpole(iterations=6, pairs=8, sigma=0.1, lr=0.05, seed=0, problem_options={"episodes": 1})
    start = result["initial"]["return"]
    returns = [h["return"] for h in result["history"]]
    assert start < 20, start  # the zero policy always pushes one way: the pole falls within ~10 steps
    assert returns[-1] >= 3 * start and max(returns) >= 40, (start, returns)


@pytest.mark.distributed
@pytest.mark.timeout(120)
def test_two_workers_give_the_same_policy_as_one():
    opts = {"iterations": 2, "pairs": 4, "problem_options": {"episodes": 1, "eval_episodes": 2}}
    one = es_cartpole(workers=1, **opts)
    two = es_cartpole(workers=2, **opts)
    assert one["theta"] == two["theta"]  # only the scalar returns travel
    assert [h["return"] for h in one["history"]] == [h["return"] for h in two["history"]]

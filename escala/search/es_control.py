"""Evolution strategies on a control task: CartPole-v1 from gymnasium (``pip install 'escala[control]'``).

The policy is a small network from the 4 observations to the 2 actions' scores, acting greedily
(``a = argmax f_theta(o)``), as in Salimans et al. 2017, where ES needs no differentiable policy
and no value function: the fitness of ``theta`` is simply the return of its episodes,
``F(theta) = 1/E sum_e sum_t r_t`` (CartPole pays 1 per step the pole stays up, 500 at most).
Every perturbation of an iteration plays the same ``episodes`` starting states (reset seeds drawn
from (seed, iteration)): common random numbers, so the antithetic pair ``F(theta +- sigma eps)``
differs only through ``eps``. The optimizer is :class:`escala.search.es.EvolutionStrategy`
unchanged: shared noise seeds, antithetic pairs, centred-rank fitness shaping, only scalar returns
travel between workers.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from escala.errors import UserError

ENV = "CartPole-v1"


def _gym():
    try:
        import gymnasium
    except ImportError:
        raise UserError("CartPole needs gymnasium: pip install 'escala[control]'") from None
    return gymnasium


def policy_network(hidden: tuple[int, ...] = (), obs: int = 4, actions: int = 2) -> nn.Module:
    """Linear (``hidden=()``) or a tanh MLP from observations to action scores."""
    layers: list[nn.Module] = []
    width = obs
    for h in hidden:
        layers += [nn.Linear(width, h), nn.Tanh()]
        width = h
    layers.append(nn.Linear(width, actions))
    return nn.Sequential(*layers)


def episode_return(env, model: nn.Module, seed: int, max_steps: int = 500) -> float:
    """The undiscounted return of one greedy episode started from ``env.reset(seed=seed)``."""
    obs, _ = env.reset(seed=int(seed))
    total = 0.0
    with torch.no_grad():
        for _ in range(max_steps):
            action = int(model(torch.as_tensor(obs, dtype=torch.float32)).argmax())
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
    return total


def cartpole_problem(hidden=(), episodes: int = 2, eval_episodes: int = 5, seed: int = 0):
    """``(model, fitness, evaluate)`` for :func:`escala.search.es.es_run`.

    ``fitness(model, iteration)``: mean return over ``episodes`` starting states shared by the
    whole iteration; ``evaluate(model)``: ``{"return": mean return}`` over ``eval_episodes`` fixed
    starting states never used in training.
    """
    gym = _gym()
    env = gym.make(ENV)
    torch.manual_seed(seed)
    model = policy_network(tuple(hidden), env.observation_space.shape[0], env.action_space.n)
    if not hidden:
        # a linear policy starts from zero (as in Mania et al. 2018, "Simple random search provides a
        # competitive approach to reinforcement learning"): every perturbation then decides the actions
        # by itself, where a random start that always pushes one way may sit on a plateau of equal
        # returns that small perturbations never leave
        nn.init.zeros_(model[-1].weight)
        nn.init.zeros_(model[-1].bias)
    eval_seeds = [10_000_000 + seed * 1000 + k for k in range(eval_episodes)]

    def fitness(m: nn.Module, iteration: int) -> float:
        rng = np.random.default_rng([seed, iteration])
        starts = rng.integers(0, 2**31 - 1, size=episodes)
        return float(np.mean([episode_return(env, m, s) for s in starts]))

    def evaluate(m: nn.Module) -> dict[str, float]:
        return {"return": float(np.mean([episode_return(env, m, s) for s in eval_seeds]))}

    return model, fitness, evaluate

"""Evolution strategies as a scalable, gradient-free optimizer (Salimans, Ho, Chen, Sidor & Sutskever
2017, "Evolution Strategies as a Scalable Alternative to Reinforcement Learning").

Per iteration, ``pairs`` perturbations ``eps_j ~ N(0, I)`` of the flat parameters ``theta`` are each
scored on both sides (antithetic sampling): ``F_j^+ = F(theta + sigma eps_j)`` and
``F_j^- = F(theta - sigma eps_j)``. The fitnesses are replaced by their centred ranks in
``[-0.5, 0.5]`` (fitness shaping, robust to the scale and outliers of F) and the search gradient is

    g = 1 / (2 * pairs * sigma) * sum_j (r_j^+ - r_j^-) eps_j,

an estimate of the gradient of the Gaussian-smoothed objective; ``theta`` ascends it with Adam.

Parallelism: worker ``w`` scores the pairs ``j`` with ``j % W == w``. ``eps_j`` is never sent: it is
regenerated from a seed every worker derives from (seed, iteration, j), so the only traffic is the
``2 * pairs`` scalar fitnesses (one all-reduce) and every worker then applies the same update to
its own copy of ``theta``. The result is bit-identical for any number of workers.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from escala.errors import UserError


def centered_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks of ``x`` scaled to ``[-0.5, 0.5]`` (Salimans et al. 2017, sec. 2.2); equal values share
    their mean rank, so a tie (common with integer returns, e.g. CartPole) contributes no direction."""
    ranks = torch.empty_like(x)
    ranks[x.argsort()] = torch.arange(len(x), dtype=x.dtype)
    _, group = torch.unique(x, return_inverse=True)
    mean_rank = torch.zeros(int(group.max()) + 1 if len(x) else 0, dtype=x.dtype).index_add_(0, group, ranks)
    mean_rank /= torch.bincount(group).to(x.dtype)
    ranks = mean_rank[group]
    return ranks / (len(x) - 1) - 0.5 if len(x) > 1 else torch.zeros_like(x)


def noise(seed: int, iteration: int, j: int, dim: int) -> torch.Tensor:
    """``eps_j`` of an iteration, the same on every worker (a generator seeded from three integers)."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + iteration) * 1_000_033 + j)
    return torch.randn(dim, generator=g)


class EvolutionStrategy:
    """ES on the parameters of ``model``; ``fitness(model, iteration)`` returns a number to maximise."""

    def __init__(
        self,
        model: nn.Module,
        fitness: Callable[[nn.Module, int], float],
        sigma: float = 0.05,
        lr: float = 0.03,
        pairs: int = 50,
        seed: int = 0,
        shaping: bool = True,
    ):
        if sigma <= 0 or pairs < 1:
            raise UserError(f"es: need sigma > 0 and pairs >= 1, got sigma={sigma}, pairs={pairs}")
        self.model, self.fitness = model, fitness
        self.sigma, self.pairs, self.seed, self.shaping = sigma, pairs, seed, shaping
        self.theta = parameters_to_vector(model.parameters()).detach().clone().requires_grad_(True)
        self.opt = torch.optim.Adam([self.theta], lr=lr)
        self.iteration = 0

    def _score(self, vector: torch.Tensor) -> float:
        vector_to_parameters(vector, self.model.parameters())
        with torch.no_grad():
            return float(self.fitness(self.model, self.iteration))

    def gradient(self, fitnesses: torch.Tensor) -> torch.Tensor:
        """``g`` from all ``2 * pairs`` fitnesses (row j: ``F_j^+, F_j^-``), regenerating every ``eps_j``."""
        f = fitnesses.reshape(-1)
        r = (centered_ranks(f) if self.shaping else f).reshape(self.pairs, 2)
        g = torch.zeros_like(self.theta)
        for j in range(self.pairs):  # a fixed order: the same sum, to the bit, on every worker
            g += (r[j, 0] - r[j, 1]) * noise(self.seed, self.iteration, j, g.numel())
        return g / (2 * self.pairs * self.sigma)

    def step(self, rank: int = 0, world: int = 1, all_reduce: Callable | None = None) -> dict[str, float]:
        """One iteration; with several workers ``all_reduce`` sums a list of floats over them."""
        theta = self.theta.detach()
        local = torch.zeros(self.pairs, 2, dtype=torch.float64)
        for j in range(rank, self.pairs, world):
            eps = noise(self.seed, self.iteration, j, theta.numel())
            local[j, 0] = self._score(theta + self.sigma * eps)
            local[j, 1] = self._score(theta - self.sigma * eps)
        fits = torch.tensor(all_reduce(local.reshape(-1).tolist())) if all_reduce else local.reshape(-1)
        fits = fits.to(theta.dtype)
        g = self.gradient(fits)
        self.opt.zero_grad()
        self.theta.grad = -g  # Adam descends; ES ascends the fitness
        self.opt.step()
        vector_to_parameters(self.theta.detach(), self.model.parameters())
        self.iteration += 1
        return {"mean_fitness": float(fits.mean()), "max_fitness": float(fits.max())}


# -- a supervised network on digits ---------------------------------------------------------------


def digits_problem(hidden=(32,), batch: int = 256, seed: int = 0):
    """An MLP on digits; fitness = minus the cross-entropy on a minibatch drawn per iteration."""
    from escala.data import load_digits
    from escala.models import build_model

    data = load_digits(seed=seed)
    torch.manual_seed(seed)
    model = build_model("mlp", data.input_shape, data.num_classes, hidden=tuple(hidden))
    x, y = data.train.x, data.train.y

    def fitness(m: nn.Module, iteration: int) -> float:
        g = torch.Generator().manual_seed(seed * 7919 + iteration)
        idx = torch.randint(len(y), (batch,), generator=g)  # one minibatch for all of an iteration
        return -float(nn.functional.cross_entropy(m(x[idx]), y[idx]))

    def accuracy(m: nn.Module) -> float:
        with torch.no_grad():
            return float((m(data.val.x).argmax(-1) == data.val.y).float().mean())

    return model, fitness, accuracy


def _es_worker(ctx, options: dict[str, Any], out_file: str) -> None:
    history = _es_loop(options, ctx.rank, ctx.world_size, ctx.all_reduce_sum if ctx.distributed else None)
    if ctx.is_main:
        Path(out_file).write_text(json.dumps(history))


def _problem(name: str, hidden, seed: int, problem_options: dict[str, Any]):
    """``(model, fitness, evaluate)``; ``evaluate(model)`` gives the metrics logged per iteration."""
    if name == "digits":
        model, fitness, accuracy = digits_problem(
            hidden=(32,) if hidden is None else hidden, seed=seed, **problem_options
        )
        return model, fitness, lambda m: {"val_acc": accuracy(m)}
    if name == "cartpole":
        from escala.search.es_control import cartpole_problem

        return cartpole_problem(() if hidden is None else hidden, seed=seed, **problem_options)
    raise UserError(f"es: problem must be 'digits' or 'cartpole', got {name!r}")


def _es_loop(options: dict[str, Any], rank: int, world: int, all_reduce) -> dict[str, Any]:
    opts = dict(options)
    iterations, hidden = opts.pop("iterations"), opts.pop("hidden", None)
    name, problem_options = opts.pop("problem", "digits"), opts.pop("problem_options", {})
    model, fitness, evaluate = _problem(name, hidden, opts.get("seed", 0), problem_options)
    es = EvolutionStrategy(model, fitness, **opts)
    initial = evaluate(model)  # iteration 0: the starting weights
    if all_reduce is not None:
        all_reduce([0.0])  # gloo connects on the first collective: not part of any iteration's time
    history, t0, in_steps = [], time.perf_counter(), 0.0
    for it in range(iterations):
        s0 = time.perf_counter()
        stats = es.step(rank, world, all_reduce)
        in_steps += time.perf_counter() - s0
        history.append(
            {
                "iteration": it + 1,
                **evaluate(model),
                "wall_s": time.perf_counter() - t0,
                "step_s": in_steps,  # the ES iterations alone (scoring, all-reduce, update), no evaluation
                **stats,
            }
        )
    return {"initial": initial, "history": history, "theta": es.theta.detach().tolist()}


def es_digits(iterations: int = 30, workers: int = 1, spawn: bool = False, **options: Any) -> dict[str, Any]:
    """Train the digits MLP by ES with ``workers`` processes; returns per-iteration history and ``theta``.

    One worker runs in this process unless ``spawn`` (one spawned single-threaded process, which is
    what a timing against several workers should compare with). ``problem_options={"batch": B}``
    sets the minibatch each fitness is measured on (256 by default).
    """
    return es_run("digits", iterations, workers, spawn, **options)


def es_cartpole(
    iterations: int = 20, workers: int = 1, spawn: bool = False, **options: Any
) -> dict[str, Any]:
    """A CartPole-v1 policy (linear unless ``hidden``) by ES; history holds the evaluation ``return``.

    ``problem_options={"episodes": E, "eval_episodes": K}`` set the episodes per fitness and per
    evaluation (see :func:`escala.search.es_control.cartpole_problem`); needs gymnasium.
    """
    from escala.search.es_control import _gym

    _gym()  # a missing gymnasium fails here with one line, not in a spawned worker
    options = {"sigma": 0.1, "lr": 0.1, "pairs": 16, **options}
    options["problem_options"] = {"episodes": 2, "eval_episodes": 5, **options.get("problem_options", {})}
    return es_run("cartpole", iterations, workers, spawn, **options)


def es_run(problem: str, iterations: int, workers: int = 1, spawn: bool = False, **options: Any) -> dict:
    """ES on ``problem`` ('digits' or 'cartpole') with ``workers`` processes sharing noise seeds."""
    options = {"iterations": iterations, "problem": problem, **options}
    if workers == 1 and not spawn:
        return _es_loop(options, 0, 1, None)
    from escala.runtime import spawn_workers

    with tempfile.TemporaryDirectory() as tmp:
        out_file = str(Path(tmp) / "es.json")
        spawn_workers(
            _es_worker,
            workers,
            (options, out_file),
            options={"device": "cpu", "backend": "gloo", "timeout_s": 120, "threads": 1},
        )
        return json.loads(Path(out_file).read_text())

"""Differential evolution, DE/rand/1/bin (Storn & Price 1997), on the unit cube of a mixed space.

A population of ``popsize`` vectors ``x_i`` in ``[0, 1]^d`` (see :mod:`escala.search.space` for how
integers and choices are encoded) evolves one generation at a time. For each target ``x_i`` three
other members ``a, b, c`` give the mutant ``v = x_a + F (x_b - x_c)`` (F = ``mutation``), reflected
back into the cube; binomial crossover builds the trial vector ``u_j = v_j`` with probability
``CR`` (= ``crossover``, and always for one random coordinate ``j_rand``), else ``x_ij``; ``u``
replaces ``x_i`` when it scores at least as well. Trial vectors are decoded to configs, so every
proposal has the declared types and bounds. This is what Hops/Maggy's ``evolutionary_search`` runs.
"""

from __future__ import annotations

import numpy as np

from escala.errors import UserError
from escala.search.searchers.base import Searcher


class DifferentialEvolution(Searcher):
    name = "de"

    def __init__(self, space, direction="max", seed=0, popsize: int = 10, mutation=0.5, crossover=0.7):
        super().__init__(space, direction, seed)
        if popsize < 4:
            raise UserError(f"de: popsize must be >= 4 (a mutant needs three other members), got {popsize}")
        if not 0.0 < mutation <= 2.0:
            raise UserError(f"de: mutation (F) must be in (0, 2], got {mutation}")
        if not 0.0 <= crossover <= 1.0:
            raise UserError(f"de: crossover (CR) must be in [0, 1], got {crossover}")
        if self.space.ndim == 0:
            raise UserError("de: the space has no searched parameter (only constants)")
        self.popsize, self.F, self.CR = popsize, float(mutation), float(crossover)
        self.generation = 0
        self.pop = self.rng.random((popsize, self.space.ndim))  # current members (genotypes)
        self.pop_scores = np.full(popsize, -np.inf)
        self._pending = list(self.pop)  # vectors of this generation still to ask, index = target
        self._targets: dict[int, tuple[int, np.ndarray]] = {}  # trial id -> (target index, vector)
        self._told = 0

    def _ask(self, trial_id):
        i = self.popsize - len(self._pending)
        if not self._pending:
            return None
        vector = self._pending.pop(0)
        self._targets[trial_id] = (i, vector)
        return self.space.decode(vector)

    def _tell(self, trial_id, score):
        i, vector = self._targets.pop(trial_id)
        if self.generation == 0 or score >= self.pop_scores[i]:
            self.pop[i], self.pop_scores[i] = vector, score
        self._told += 1
        if self._told == self.popsize:
            self._next_generation()

    def _next_generation(self) -> None:
        self.generation += 1
        self._told = 0
        n, d = self.pop.shape
        trials = []
        for i in range(n):
            a, b, c = self.rng.choice([j for j in range(n) if j != i], size=3, replace=False)
            v = self.pop[a] + self.F * (self.pop[b] - self.pop[c])
            v = np.where(v < 0, -v, v)
            v = np.clip(np.where(v > 1, 2 - v, v), 0.0, 1.0)  # reflect, then clip what still sticks out
            cross = self.rng.random(d) < self.CR
            cross[self.rng.integers(d)] = True
            trials.append(np.where(cross, v, self.pop[i]))
        self._pending = trials

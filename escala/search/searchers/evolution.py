"""Regularized (aging) evolution (Real, Aggarwal, Huang & Le 2019, "Regularized Evolution for Image
Classifier Architecture Search").

A population of at most ``population`` trained models is kept in order of birth. The first
``population`` trials are random; after that, each new trial samples ``sample`` members uniformly,
takes the best of them as parent, and mutates one parameter of it (for a :class:`~escala.search.space.Layers`
dimension: add a layer, remove one, or change one width). When the child's result arrives it joins
the population and the *oldest* member leaves, whatever its score: aging removes lucky early
models and keeps the search exploring. It needs no generations, so it suits asynchronous workers.
"""

from __future__ import annotations

from collections import deque

from escala.errors import UserError
from escala.search.searchers.base import Searcher
from escala.search.space import config_key


class RegularizedEvolution(Searcher):
    name = "evolution"

    def __init__(self, space, direction="max", seed=0, population: int = 10, sample: int = 3):
        super().__init__(space, direction, seed)
        if population < 2 or not 1 <= sample <= population:
            raise UserError(
                f"evolution: need population >= 2 and 1 <= sample <= population, got {population}, {sample}"
            )
        if not self.space.names:
            raise UserError("evolution: the space has no searched parameter (only constants)")
        self.population, self.sample = population, sample
        self.members: deque[tuple[int, float]] = deque()  # (trial id, score), oldest first
        self._seen: set[str] = set()

    def _ask(self, trial_id):
        if len(self.asked) < self.population:
            child = self.space.sample(self.rng)
        elif not self.members:
            return None  # nothing trained yet to breed from
        else:
            picks = self.rng.integers(len(self.members), size=self.sample)
            parent_id = max((self.members[i] for i in picks), key=lambda m: m[1])[0]
            child = self._mutate(self.asked[parent_id])
        self._seen.add(config_key(child))
        return child

    def _mutate(self, parent):
        child = dict(parent)
        for _ in range(20):  # one parameter changes; retry a few times for a config not tried yet
            name = self.space.names[int(self.rng.integers(len(self.space.names)))]
            child = dict(parent)
            child[name] = self.space.dims[name].mutate(parent[name], self.rng)
            if config_key(child) not in self._seen:
                break
        return child

    def _tell(self, trial_id, score):
        self.members.append((trial_id, score))
        if len(self.members) > self.population:
            self.members.popleft()

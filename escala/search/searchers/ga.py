"""A generational genetic algorithm over mixed discrete/continuous spaces (Holland 1975; Goldberg 1989).

Each generation of ``popsize`` individuals is evaluated, then the next one is bred from it:
``elite`` best individuals survive unchanged (without spending trials on them again), and every child
comes from two parents picked by tournament selection (the best of ``tournament`` random
individuals), combined by uniform crossover with probability ``crossover`` (each parameter taken from
either parent with probability 1/2) and mutated parameter by parameter with probability
``mutation``: a Gaussian step in the unit coordinates of a numeric parameter (so bounds and integer
types hold), another value of a choice, an added/removed/resized layer of an architecture.
"""

from __future__ import annotations

from escala.errors import UserError
from escala.search.searchers.base import Searcher
from escala.search.space import config_key


class GeneticSearcher(Searcher):
    name = "ga"

    def __init__(
        self,
        space,
        direction="max",
        seed=0,
        popsize: int = 10,
        crossover: float = 0.7,
        mutation: float = 0.3,
        tournament: int = 2,
        elite: int = 1,
        scale: float = 0.2,
    ):
        super().__init__(space, direction, seed)
        if popsize < 2:
            raise UserError(f"ga: popsize must be >= 2, got {popsize}")
        for name, p in (("crossover", crossover), ("mutation", mutation)):
            if not 0.0 <= p <= 1.0:
                raise UserError(f"ga: {name} must be a probability in [0, 1], got {p}")
        if not 0 <= elite < popsize:
            raise UserError(f"ga: elite must be in [0, popsize), got {elite}")
        self.popsize, self.pc, self.pm = popsize, crossover, mutation
        self.tournament, self.elite, self.scale = max(1, tournament), elite, scale
        self.generation = 0
        self._queue = [self.space.sample(self.rng) for _ in range(popsize)]  # configs still to ask
        self._members: list[int] = []  # trial ids of the generation being evaluated
        self._survivors: list[tuple[dict, float]] = []  # elites carried over with their scores
        self._seen: set[str] = {config_key(c) for c in self._queue}

    def _ask(self, trial_id):
        if not self._queue:
            return None  # the generation is out; wait for its results before breeding
        self._members.append(trial_id)
        return self._queue.pop(0)

    def _tell(self, trial_id, score):
        if self._queue or any(t not in self.scores for t in self._members):
            return
        population = [(self.asked[t], self.scores[t]) for t in self._members] + self._survivors
        population.sort(key=lambda cs: cs[1], reverse=True)
        self._breed(population)

    def _breed(self, population: list[tuple[dict, float]]) -> None:
        self.generation += 1
        self._survivors = population[: self.elite]
        self._members = []
        for _ in range(self.popsize - self.elite):
            child = self._child(population)
            for _ in range(20):  # prefer a config not evaluated yet; small discrete spaces may run out
                if config_key(child) not in self._seen:
                    break
                child = self._mutate(child, force=True)
            self._seen.add(config_key(child))
            self._queue.append(child)

    def _select(self, population):
        picks = self.rng.integers(len(population), size=self.tournament)
        return max((population[i] for i in picks), key=lambda cs: cs[1])[0]

    def _child(self, population):
        a, b = self._select(population), self._select(population)
        if self.rng.random() < self.pc:
            child = {n: (a[n] if self.rng.random() < 0.5 else b[n]) for n in self.space.names}
        else:
            child = {n: a[n] for n in self.space.names}
        return self._mutate({**self.space.constants, **child})

    def _mutate(self, config, force: bool = False):
        config = dict(config)
        names = self.space.names
        hit = [n for n in names if self.rng.random() < self.pm]
        if force and not hit and names:
            hit = [names[int(self.rng.integers(len(names)))]]
        for n in hit:
            config[n] = self.space.dims[n].mutate(config[n], self.rng, self.scale)
        return config

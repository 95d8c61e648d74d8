"""Random search (Bergstra & Bengio 2012): independent draws from the space.

With a few important dimensions among many, random draws cover each important one more densely
than a grid of the same budget, which is why it is the baseline every other searcher must beat.
"""

from __future__ import annotations

from escala.search.searchers.base import Searcher


class RandomSearcher(Searcher):
    name = "random"

    def _ask(self, trial_id):
        return self.space.sample(self.rng)

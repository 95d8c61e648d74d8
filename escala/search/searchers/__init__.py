"""Searchers: ask/tell proposers of configs, knowing nothing of how trials run."""

from __future__ import annotations

from typing import Any

from escala.errors import UserError
from escala.search.searchers.base import Searcher
from escala.search.searchers.de import DifferentialEvolution
from escala.search.searchers.evolution import RegularizedEvolution
from escala.search.searchers.ga import GeneticSearcher
from escala.search.searchers.grid import GridSearcher
from escala.search.searchers.random import RandomSearcher

SEARCHERS: dict[str, type[Searcher]] = {
    "grid": GridSearcher,
    "random": RandomSearcher,
    "ga": GeneticSearcher,
    "de": DifferentialEvolution,
    "evolution": RegularizedEvolution,
}


def make_searcher(name: str, space, direction: str = "max", seed: int = 0, **options: Any) -> Searcher:
    """Build a searcher by name; ``options`` are its keyword settings (popsize, mutation, ...)."""
    if name not in SEARCHERS:
        raise UserError(f"searcher must be one of {', '.join(SEARCHERS)}; got {name!r}")
    try:
        return SEARCHERS[name](space, direction, seed, **options)
    except TypeError as err:
        raise UserError(f"searcher {name!r}: {err}") from None


__all__ = [
    "SEARCHERS",
    "DifferentialEvolution",
    "GeneticSearcher",
    "GridSearcher",
    "RandomSearcher",
    "RegularizedEvolution",
    "Searcher",
    "make_searcher",
]

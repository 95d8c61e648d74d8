"""The ask/tell protocol every searcher follows; searchers never see how or where trials run.

``ask(trial_id)`` returns the next config to try, or ``None`` when nothing can be proposed until more
results come in (a generation of the genetic algorithm waiting for its stragglers); ``tell(trial_id,
value)`` gives back the objective (``None`` for a failed trial). ``finished`` turns true once the
searcher has nothing more to propose (a grid that is exhausted). Internally every searcher maximises
``score = value`` (direction "max") or ``-value`` ("min"); a failed trial scores ``-inf``.

Searchers are deterministic functions of their seed and the sequence of asks and tells, which is
what lets a killed study resume by replaying its log (see :mod:`escala.search.store`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from escala.errors import UserError
from escala.search.space import Space


class Searcher:
    name = "base"

    def __init__(self, space: Space | dict, direction: str = "max", seed: int = 0):
        if direction not in ("max", "min"):
            raise UserError(f"direction must be 'max' or 'min', got {direction!r}")
        self.space = space if isinstance(space, Space) else Space(space)
        self.direction = direction
        self.rng = np.random.default_rng(seed)
        self.asked: dict[int, dict[str, Any]] = {}
        self.scores: dict[int, float] = {}

    def score(self, value: float | None) -> float:
        if value is None or not math.isfinite(float(value)):
            return -math.inf
        return float(value) if self.direction == "max" else -float(value)

    def ask(self, trial_id: int) -> dict[str, Any] | None:
        config = self._ask(trial_id)
        if config is not None:
            self.asked[trial_id] = config
        return config

    def tell(self, trial_id: int, value: float | None) -> None:
        if trial_id not in self.asked:
            raise KeyError(f"trial {trial_id} was never asked of this searcher")
        self.scores[trial_id] = self.score(value)
        self._tell(trial_id, self.scores[trial_id])

    @property
    def finished(self) -> bool:
        return False

    def best(self) -> tuple[dict[str, Any], float] | None:
        """The best config told so far and its value (in the user's direction)."""
        if not self.scores:
            return None
        tid = max(self.scores, key=self.scores.get)
        s = self.scores[tid]
        return self.asked[tid], (s if self.direction == "max" else -s)

    # -- for subclasses --------------------------------------------------------------------------
    def _ask(self, trial_id: int) -> dict[str, Any] | None:
        raise NotImplementedError

    def _tell(self, trial_id: int, score: float) -> None:
        pass

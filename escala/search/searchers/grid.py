"""Grid search: every combination of the space's lists, in order (what Maggy's ``launch`` runs)."""

from __future__ import annotations

from escala.search.searchers.base import Searcher


class GridSearcher(Searcher):
    name = "grid"

    def __init__(self, space, direction="max", seed=0):
        super().__init__(space, direction, seed)
        self._points = list(self.space.grid())
        self._next = 0

    def _ask(self, trial_id):
        if self._next >= len(self._points):
            return None
        point = self._points[self._next]
        self._next += 1
        return dict(point)

    @property
    def finished(self) -> bool:
        return self._next >= len(self._points)

    def __len__(self) -> int:
        return len(self._points)

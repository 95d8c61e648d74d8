"""Early stopping of unpromising trials from their intermediate reports.

Both rules see ``on_report(trial, step, value)`` for every intermediate report and answer True to
stop the trial there; ``on_complete(trial)`` tells them a trial ran to its end. ``step`` is the
resource spent so far (epochs for ``escala search``). Values are compared in the study's direction.

* :class:`MedianStopping`, the median stopping rule of Google Vizier (Golovin et al. 2017): stop a
  trial at step ``s`` when its best value so far is worse than the median, over the other trials
  that reached step ``s``, of their running averages up to ``s``.
* :class:`ASHA`, the stopping form of asynchronous successive halving (Li et al. 2020, "A System for
  Massively Parallel Hyperparameter Tuning"): rungs sit at ``min_steps * eta^k``; a trial reaching
  a rung continues only if its value is within the top ``1/eta`` of the values recorded at that
  rung so far, so about ``1/eta`` of the trials survive each rung, without waiting for a cohort.
  ``eta`` defaults to 4, the reduction factor of the paper's experiments (and Ray Tune's and
  Optuna's default): with trials of ``R`` epochs, a configuration costs on average about
  ``min_steps * (1 + log_eta(R / min_steps))`` epochs instead of ``R``.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from escala.errors import UserError


class Stopper:
    name = "none"

    def __init__(self, direction: str = "max"):
        if direction not in ("max", "min"):
            raise UserError(f"direction must be 'max' or 'min', got {direction!r}")
        self.sign = 1.0 if direction == "max" else -1.0

    def on_report(self, trial: int, step: float, value: float | None) -> bool:
        return False

    def on_complete(self, trial: int) -> None:
        pass

    def decision_steps(self) -> tuple[float, ...] | None:
        """The steps at which this rule may stop a trial; None when any report may stop it."""
        return None


class MedianStopping(Stopper):
    name = "median"

    def __init__(self, direction="max", grace_steps: float = 1, min_trials: int = 3):
        super().__init__(direction)
        self.grace_steps, self.min_trials = grace_steps, max(1, int(min_trials))
        self.history: dict[int, list[tuple[float, float]]] = defaultdict(list)  # trial -> (step, score)

    def _running_average(self, trial: int, step: float) -> float | None:
        seen = [s for st, s in self.history[trial] if st <= step]
        reached = any(st >= step for st, _ in self.history[trial])
        return float(np.mean(seen)) if seen and reached else None

    def on_report(self, trial, step, value):
        if value is None or not math.isfinite(value):
            return False
        score = self.sign * float(value)
        self.history[trial].append((float(step), score))
        if step < self.grace_steps:
            return False
        others = [self._running_average(t, step) for t in self.history if t != trial]
        others = [a for a in others if a is not None]
        if len(others) < self.min_trials:
            return False
        best = max(s for _, s in self.history[trial])
        return best < float(np.median(others))


class ASHA(Stopper):
    name = "asha"

    def __init__(self, direction="max", min_steps: float = 1, eta: float = 4, max_steps: float | None = None):
        super().__init__(direction)
        if eta <= 1 or min_steps <= 0:
            raise UserError(f"asha: need eta > 1 and min_steps > 0, got eta={eta}, min_steps={min_steps}")
        self.eta = float(eta)
        rungs, r = [], float(min_steps)
        while (max_steps is None and len(rungs) < 32) or (max_steps is not None and r < max_steps):
            rungs.append(r)  # the last rung (max_steps itself) is the trial's end: no decision there
            r *= eta
        self.rungs = rungs
        self.recorded: dict[float, list[float]] = {r: [] for r in rungs}
        self.passed: dict[int, int] = defaultdict(int)  # trial -> number of rungs already decided

    def on_report(self, trial, step, value):
        if value is None or not math.isfinite(value):
            return False
        score = self.sign * float(value)
        stop = False
        while self.passed[trial] < len(self.rungs) and step >= self.rungs[self.passed[trial]]:
            rung = self.rungs[self.passed[trial]]
            self.passed[trial] += 1
            recorded = self.recorded[rung]
            if recorded:
                cutoff = float(np.percentile(recorded, (1 - 1 / self.eta) * 100))
                stop = stop or score < cutoff
            recorded.append(score)
            if stop:
                break
        return stop

    def decision_steps(self) -> tuple[float, ...]:
        return tuple(self.rungs)


STOPPERS = {"none": Stopper, "median": MedianStopping, "asha": ASHA}


def make_stopper(name: str | None, direction: str = "max", **options) -> Stopper:
    name = name or "none"
    if name not in STOPPERS:
        raise UserError(f"early stopping must be one of {', '.join(STOPPERS)}; got {name!r}")
    return STOPPERS[name](direction, **options)

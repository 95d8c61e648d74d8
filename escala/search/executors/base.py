"""What the study driver asks of an executor, and what a trial sees (its :class:`Reporter`).

An executor runs trial functions ``fn(config, reporter)`` somewhere (a local process, a Ray task)
and turns what happens into :class:`Event`s; it knows nothing of searchers. Intermediate reports are
synchronous: the trial waits for the driver's answer (continue or stop) before it goes on, so an
early-stopping decision is taken on exactly the reports the driver has seen.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class TrialStopped(Exception):
    """Raised by :meth:`Reporter.report` when the study stops this trial early; let it propagate."""


@dataclass
class TrialSpec:
    id: int
    fn: Callable
    config: dict[str, Any]
    metric: str
    trial_dir: str
    resources: dict[str, Any] = field(default_factory=dict)
    may_stop: bool = False  # an early-stopping rule is on: reports may be answered with "stop"
    # The only steps at which that rule can stop a trial (ASHA's rungs), or None: any step may be.
    stop_steps: tuple[float, ...] | None = None


@dataclass
class Event:
    kind: str  # "report" | "done" | "failed" | "stopped"
    trial: int
    step: float | None = None
    metrics: dict[str, Any] | None = None
    error: str | None = None


class Executor:
    slots = 1

    def submit(self, spec: TrialSpec) -> None:
        raise NotImplementedError

    def wait(self, timeout: float) -> list[Event]:
        """Events that happened since the last call, waiting up to ``timeout`` seconds for the first."""
        raise NotImplementedError

    def answer(self, trial: int, stop: bool) -> None:
        """Reply to a report event: let the trial continue, or stop it."""
        raise NotImplementedError

    def running(self) -> int:
        raise NotImplementedError

    def shutdown(self) -> None:
        pass


def as_number(value: Any) -> Any:
    """Report values as plain floats (tensors and numpy scalars too); other values pass through."""
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (TypeError, ValueError, RuntimeError):
            return str(value)
    if isinstance(value, bool) or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


class Reporter:
    """Handed to a trial: ``report(step, **metrics)`` after each epoch; raises :class:`TrialStopped`."""

    def __init__(
        self,
        trial_id: int,
        trial_dir: str,
        resources: dict[str, Any],
        ask: Callable,
        may_stop: bool = False,
        stop_steps: tuple[float, ...] | None = None,
    ):
        self.trial_id, self.trial_dir, self.resources = trial_id, trial_dir, dict(resources)
        self.may_stop = may_stop  # lets a trial skip work that only serves early stopping
        # where a stop can happen (None: after any report): a trial may pause only there
        self.stop_steps = tuple(stop_steps) if stop_steps is not None and may_stop else None
        self._ask = ask  # sends (step, metrics), returns True when the driver says stop
        self.last: dict[str, Any] = {}
        self.last_step: float | None = None

    def report(self, step: float, **metrics: Any) -> None:
        metrics = {k: as_number(v) for k, v in metrics.items()}
        self.last, self.last_step = metrics, step
        if self._ask(float(step), metrics):
            raise TrialStopped(f"trial {self.trial_id} stopped early at step {step}")


def run_trial(spec: TrialSpec, reporter: Reporter) -> Event:
    """Run one trial function and say how it ended; never raises for the trial's own failure."""
    try:
        result = spec.fn(spec.config, reporter)
    except TrialStopped:
        return Event("stopped", spec.id, step=reporter.last_step, metrics=reporter.last)
    except BaseException as err:  # noqa: BLE001 - a crashing trial is recorded, the search goes on
        lines = traceback.format_exception(type(err), err, err.__traceback__)
        frames = [ln.strip().splitlines()[0] for ln in lines[:-1] if ln.strip().startswith("File ")]
        where = frames[-1] if frames else ""
        message = f"{type(err).__name__}: {err}" + (f" ({where})" if where else "")
        return Event("failed", spec.id, error=message)
    if result is None:
        result = dict(reporter.last)
    elif isinstance(result, (int, float)) and not isinstance(result, bool) or hasattr(result, "item"):
        result = {spec.metric: as_number(result)}
    elif isinstance(result, dict):
        result = {k: as_number(v) for k, v in result.items()}
    else:
        return Event(
            "failed", spec.id, error=f"the trial returned {type(result).__name__}; return a dict or a number"
        )
    return Event("done", spec.id, metrics=result)

"""Run trials as Ray tasks, on a local Ray instance or a cluster (``--executor ray --address ...``).

Optional: needs the ``ray`` extra (``pip install 'escala[ray]'``). Each trial is one task asking
for ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs (Ray sets ``CUDA_VISIBLE_DEVICES``). A small
hub actor carries the intermediate reports to the driver and its continue/stop answers back, so
early stopping works as with the local executor. A task that dies is recorded as failed.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any

from escala.errors import UserError
from escala.search.executors.base import Event, Executor, Reporter, TrialSpec, run_trial


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'escala[ray]' (or pip install ray)") from None
    return ray


class _Hub:
    """Reports in, decisions out; one per study, living in the Ray cluster."""

    def __init__(self):
        self.events: list[tuple] = []
        self.decisions: dict[tuple[int, float], bool] = {}

    def report(self, tid, step, metrics):
        self.events.append((tid, step, metrics))

    def decision(self, tid, step):
        return self.decisions.pop((tid, step), None)

    def drain(self):
        out, self.events = self.events, []
        return out

    def answer(self, tid, step, stop):
        self.decisions[(tid, step)] = stop


def _trial_task(spec: TrialSpec, hub) -> tuple:
    import os

    import ray

    def ask(step, metrics):
        ray.get(hub.report.remote(spec.id, step, metrics))
        while True:  # the driver answers within its poll interval
            stop = ray.get(hub.decision.remote(spec.id, step))
            if stop is not None:
                return stop
            time.sleep(0.02)

    if spec.resources.get("cpus"):
        import torch

        os.environ["ESCALA_CPUS"] = str(
            spec.resources["cpus"]
        )  # escala.train inside keeps to the task's CPUs
        torch.set_num_threads(int(spec.resources["cpus"]))
    os.makedirs(spec.trial_dir, exist_ok=True)
    reporter = Reporter(spec.id, spec.trial_dir, spec.resources, ask, spec.may_stop, spec.stop_steps)
    event = run_trial(spec, reporter)
    return event.kind, event.step, event.metrics, event.error


class RayExecutor(Executor):
    def __init__(
        self,
        parallel: int = 1,
        address: str | None = None,
        cpus_per_trial: int | None = None,
        gpus_per_trial: int = 0,
        init_options: dict[str, Any] | None = None,
    ):
        ray = _import_ray()
        if parallel < 1:
            raise UserError(f"parallel must be >= 1, got {parallel}")
        self.ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            options = {"include_dashboard": False, "log_to_driver": False, **(init_options or {})}
            try:
                ray.init(address=address, **options)
            except (ConnectionError, ValueError, RuntimeError) as err:
                raise UserError(
                    f"--executor ray: cannot start or reach Ray at {address or 'local'}: {err}"
                ) from None
        self.slots = parallel
        self.cpus, self.gpus = cpus_per_trial or 1, gpus_per_trial
        self.hub = ray.remote(num_cpus=0)(_Hub).remote()
        self.task = ray.remote(_trial_task).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0)
        self.refs: dict[Any, int] = {}
        self.steps: dict[int, float] = {}
        self._by_value: set[str] = {"__main__"}

    def submit(self, spec: TrialSpec) -> None:
        spec = dataclasses.replace(spec, resources={"cpus": self.cpus, **spec.resources})
        module = sys.modules.get(getattr(spec.fn, "__module__", "") or "")
        if module is not None and "." not in module.__name__ and module.__name__ not in self._by_value:
            # a stand-alone script or test file: Ray's workers may not find it on their path, so the
            # function travels by value (cloudpickle) instead of by reference
            self.ray.cloudpickle.register_pickle_by_value(module)
            self._by_value.add(module.__name__)
        self.refs[self.task.remote(spec, self.hub)] = spec.id

    def running(self) -> int:
        return len(self.refs)

    def wait(self, timeout: float) -> list[Event]:
        ray = self.ray
        events = [
            Event("report", tid, step=step, metrics=metrics)
            for tid, step, metrics in ray.get(self.hub.drain.remote())
        ]
        for tid, step, _ in [(e.trial, e.step, None) for e in events]:
            self.steps[tid] = step
        if events or not self.refs:
            return events
        ready, _ = ray.wait(list(self.refs), num_returns=1, timeout=min(timeout, 0.2))
        for ref in ready:
            tid = self.refs.pop(ref)
            try:
                kind, step, metrics, error = ray.get(ref)
                events.append(Event(kind, tid, step=step, metrics=metrics, error=error))
            except Exception as err:  # noqa: BLE001 - the task or its worker died
                events.append(
                    Event("failed", tid, error=f"Ray task failed: {type(err).__name__}: {err}"[:500])
                )
        return events

    def answer(self, trial: int, stop: bool) -> None:
        self.ray.get(self.hub.answer.remote(trial, self.steps.get(trial), bool(stop)))

    def shutdown(self) -> None:
        for ref in list(self.refs):
            self.ray.cancel(ref, force=True)
        self.refs.clear()
        if self._started:
            self.ray.shutdown()

"""The study driver: ask the searcher, run trials on an executor, stop the hopeless, record everything.

``launch(train, space)`` and ``evolutionary_search(train, space, ...)`` are the one-liners a Hops/Maggy
user knows; :func:`run_study` is the loop under both and under ``escala search``. A trial function is
``train(config, reporter)``: it calls ``reporter.report(step, **metrics)`` along the way and returns
its final metrics (a dict, or the objective as a number).

Resuming (``resume=True``) replays the study log into a fresh searcher and stopper built with the
same settings and seed: the searcher is asked again for every recorded proposal (and must give the
same config, else the settings changed) and told every recorded result, so it ends in the state it
had when the study was killed. Trials proposed but unfinished are run again; nothing finished is
re-run and nothing is proposed twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from escala.errors import UserError
from escala.metrics import write_json
from escala.search.executors.base import Executor, TrialSpec
from escala.search.searchers import Searcher, make_searcher
from escala.search.space import Space, config_key, normalize
from escala.search.stopping import Stopper, make_stopper
from escala.search.store import StudyStore, Trial


def _replay(store: StudyStore, searcher: Searcher, stopper: Stopper, metric: str) -> None:
    for e in store.events:
        kind, tid = e["event"], e.get("trial")
        if kind == "proposed":
            again = searcher.ask(tid)
            if again is None or config_key(again) != config_key(e["config"]):
                raise UserError(
                    f"resume: replaying the study in {store.dir} proposes {again} for trial {tid} where "
                    f"{e['config']} was recorded; the space, searcher or seed must have changed"
                )
        elif kind in ("completed", "failed", "stopped"):
            searcher.tell(tid, e.get("value"))
            if kind == "completed":
                stopper.on_complete(tid)
    for trial in store.trials.values():  # rebuild the stopper from the last attempt of every trial
        for r in trial.reports:
            stopper.on_report(trial.id, r["step"], r.get(metric))


def run_study(
    objective: Callable,
    searcher: Searcher,
    executor: Executor,
    store: StudyStore,
    trials: int,
    metric: str = "val_acc",
    stopper: Stopper | None = None,
    resources: dict[str, Any] | None = None,
    poll_s: float = 1.0,
    on_event: Callable[[str, Trial], None] | None = None,
    time_budget_s: float | None = None,
) -> dict[str, Any]:
    """Run until ``trials`` proposals have all finished (or the searcher has nothing left); return the summary.

    With ``time_budget_s``, no trial is proposed once the study's wall time (earlier runs of a
    resumed study included) has reached it; trials already running finish (as Optuna's ``timeout``
    and Ray Tune's ``time_budget_s``).
    """
    if time_budget_s is not None and time_budget_s <= 0:
        raise UserError(f"time budget must be > 0 seconds, got {time_budget_s}")
    stopper = stopper or make_stopper(None, searcher.direction)
    _replay(store, searcher, stopper, metric)
    trials_dir = store.dir / "trials"

    def submit(trial: Trial) -> None:
        store.start(trial.id)
        spec = TrialSpec(trial.id, objective, trial.config, metric, str(trials_dir / f"{trial.id:05d}"))
        spec.resources = dict(resources or {})
        spec.may_stop = stopper.name != "none"
        spec.stop_steps = stopper.decision_steps()
        executor.submit(spec)

    pending = store.pending()
    next_id = max(store.trials, default=-1) + 1
    try:
        while True:
            while pending and executor.running() < executor.slots:
                submit(pending.pop(0))
            while (
                not pending
                and executor.running() < executor.slots
                and len(store.trials) < trials
                and (time_budget_s is None or store.now() < time_budget_s)
            ):
                config = searcher.ask(next_id)
                if config is None:
                    break
                store.propose(next_id, normalize(config))
                submit(store.trials[next_id])
                next_id += 1
            if executor.running() == 0 and not pending:
                break  # budget spent, searcher finished, or a searcher waiting with nothing in flight
            for event in executor.wait(poll_s):
                trial = store.trials[event.trial]
                if event.kind == "report":
                    store.report(trial.id, event.step, event.metrics)
                    stop = stopper.on_report(trial.id, event.step, event.metrics.get(metric))
                    executor.answer(trial.id, stop)
                    continue
                if event.kind == "done":
                    value = event.metrics.get(metric)
                    if (
                        not isinstance(value, (int, float))
                        or isinstance(value, bool)
                        or not math.isfinite(value)
                    ):
                        store.fail(trial.id, f"the trial's result has no finite {metric!r}: {event.metrics}")
                    else:
                        store.complete(trial.id, event.metrics, float(value))
                        stopper.on_complete(trial.id)
                elif event.kind == "stopped":
                    store.stop(trial.id, event.step, (event.metrics or {}).get(metric))
                else:
                    store.fail(trial.id, event.error or "unknown error")
                searcher.tell(trial.id, trial.value)
                if on_event is not None:
                    on_event(event.kind, trial)
    finally:
        executor.shutdown()
    summary = summarize(store, metric, searcher.direction)
    write_json(store.dir / "summary.json", summary)
    return summary


def summarize(store: StudyStore, metric: str, direction: str) -> dict[str, Any]:
    done = [t for t in store.trials.values() if t.status == "completed"]
    best = None
    if done:
        best = (max if direction == "max" else min)(done, key=lambda t: t.value)
    return {
        "best_config": best.config if best else None,
        "best_value": best.value if best else None,
        "best_trial": best.id if best else None,
        "metric": metric,
        "direction": direction,
        "trials_completed": len(done),
        "trials_failed": store.count("failed"),
        "trials_stopped_early": store.count("stopped"),
        "trials_proposed": len(store.trials),
        "wall_s": round(store.now(), 3),
        "searcher": store.settings.get("searcher"),
    }


def _study(
    objective: Callable,
    space,
    searcher: str,
    trials: int,
    direction: str,
    metric: str,
    out: str | Path | None,
    parallel: int,
    early_stop: str | None,
    resume: bool,
    seed: int,
    executor: Executor | None,
    searcher_options: dict[str, Any],
    early_stop_options: dict[str, Any] | None = None,
    time_budget_s: float | None = None,
) -> dict[str, Any]:
    import tempfile

    space = space if isinstance(space, Space) else Space(space)
    built = make_searcher(searcher, space, direction, seed, **searcher_options)
    if trials is None:
        trials = len(built) if hasattr(built, "__len__") else 10
    if trials < 1:
        raise UserError(f"trials must be >= 1, got {trials}")
    out = out or tempfile.mkdtemp(prefix="escala-search-")
    settings = {
        "searcher": searcher,
        "searcher_options": searcher_options,
        "seed": seed,
        "space": repr(space),
        "metric": metric,
        "direction": direction,
        "early_stop": early_stop or "none",
        "objective": f"{getattr(objective, '__module__', '?')}.{getattr(objective, '__qualname__', '?')}",
        "trials": trials,
    }
    store = StudyStore(out, settings, resume=resume)
    try:
        if executor is None:
            from escala.search.executors.local import LocalExecutor

            executor = LocalExecutor(parallel)
        summary = run_study(
            objective,
            built,
            executor,
            store,
            trials,
            metric,
            make_stopper(early_stop, direction, **(early_stop_options or {})),
            time_budget_s=time_budget_s,
        )
    finally:
        store.close()
    summary["out"] = str(out)
    return summary


def launch(
    train: Callable,
    space: dict,
    *,
    searcher: str = "grid",
    trials: int | None = None,
    direction: str = "max",
    metric: str = "metric",
    out: str | Path | None = None,
    parallel: int = 1,
    early_stop: str | None = None,
    early_stop_options: dict[str, Any] | None = None,
    resume: bool = False,
    seed: int = 0,
    executor: Executor | None = None,
    time_budget_s: float | None = None,
    **searcher_options: Any,
) -> dict[str, Any]:
    """Search ``space`` with ``train(config, reporter)``; by default every point of the grid of its lists.

    ``launch(train, {"lr": [0.001, 0.005, 0.01], "dropout": [0.5, 0.6]})`` runs the 6 grid points.
    If ``train`` returns a number, that is the objective; if it returns a dict, ``metric`` names the
    objective in it. ``time_budget_s`` stops proposing trials once that much wall time has passed.
    Returns the summary (best_config, best_value, trials_completed, ...), also
    written with every trial's record into ``out``.
    """
    return _study(
        train,
        space,
        searcher,
        trials,
        direction,
        metric,
        out,
        parallel,
        early_stop,
        resume,
        seed,
        executor,
        searcher_options,
        early_stop_options,
        time_budget_s,
    )


def evolutionary_search(
    train: Callable,
    space: dict,
    direction: str = "max",
    popsize: int = 10,
    generations: int = 3,
    crossover: float = 0.7,
    mutation: float = 0.5,
    **kwargs: Any,
) -> dict[str, Any]:
    """Differential evolution as in Hops/Maggy: ``mutation`` is DE's F, ``crossover`` its CR.

    Runs the random initial population and ``generations`` generations of trial vectors:
    ``popsize * (generations + 1)`` trials. Other keyword arguments are those of :func:`launch`.
    """
    trials = kwargs.pop("trials", popsize * (generations + 1))
    return launch(
        train,
        space,
        searcher="de",
        trials=trials,
        direction=direction,
        popsize=popsize,
        crossover=crossover,
        mutation=mutation,
        **kwargs,
    )

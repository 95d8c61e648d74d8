"""``escala bench search``: escala's searchers against Optuna's TPE and random samplers, same budget.

One objective for every arm: the digits MLP trained by ``escala train`` (via
:func:`escala.search.trainable.train_trial`) for a fixed number of epochs, over learning rate,
architecture, batch size and weight decay; the objective is the final validation accuracy. Every
arm gets the same number of trials and runs them one at a time (Optuna in-process, ``n_jobs=1``;
escala in its local executor with ``--parallel 1``) with the same thread count, so the table
compares what each search finds and what it costs. Then: the throughput of 2 parallel trials over 1,
random search with and without ASHA (configurations evaluated per minute), and evolution strategies
(validation accuracy against iterations; iteration time with 1 and 2 workers).
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from escala.bench.report import machine_line, markdown_table, update_section
from escala.search.executors.base import Reporter
from escala.search.executors.local import LocalExecutor
from escala.search.space import choice, integer, loguniform
from escala.search.store import read_study
from escala.search.study import launch
from escala.search.trainable import train_trial

# A trial trains the digits MLP for 16 epochs (where the best configurations are still improving,
# see the table), and ASHA runs with the paper's eta = 4 from 1 epoch: rungs at 1 and 4, the trial's
# end at 16 = eta^2. With 6 epochs (rungs at 1 and 4 of 6) early stopping could at most save ~3x.
FULL = {
    "trials": 20,
    "epochs": 16,
    "es_iterations": 40,
    "es_pairs": 30,
    "budget_s": 30,
    "cartpole_iterations": 16,
}
QUICK = {
    "trials": 8,
    "epochs": 16,
    "es_iterations": 10,
    "es_pairs": 10,
    "budget_s": 10,
    "cartpole_iterations": 5,
}
HIDDEN = [[32], [64], [128], [64, 32], [128, 64]]


def space(epochs: int) -> dict[str, Any]:
    return {
        "epochs": epochs,
        "lr": loguniform(1e-3, 0.5),
        "hidden": choice(HIDDEN),
        "batch_size": integer(16, 128, log=True),
        "weight_decay": loguniform(1e-6, 1e-2),
    }


def _escala_arm(searcher: str, spec: dict, cpus: int, parallel: int = 1, early_stop=None, **opts) -> dict:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        s = launch(
            train_trial,
            space(spec["epochs"]),
            searcher=searcher,
            trials=spec["trials"],
            metric="val_acc",
            out=out + "/s",
            early_stop=early_stop,
            early_stop_options={"max_steps": spec["epochs"]} if early_stop == "asha" else None,
            executor=LocalExecutor(parallel, cpus_per_trial=cpus),
            **opts,
        )
        wall = time.perf_counter() - t0
    return {
        "best": s["best_value"],
        "completed": s["trials_completed"],
        "stopped": s["trials_stopped_early"],
        "wall": wall,
    }


def _budget_arm(early_stop: str | None, spec: dict, cpus: int) -> dict:
    """Random search for a fixed wall time; what finished inside it (completed or stopped early)."""
    with tempfile.TemporaryDirectory() as out:
        launch(
            train_trial,
            space(spec["epochs"]),
            searcher="random",  # the same seed in both arms: the same configurations in the same order
            trials=1_000_000,
            metric="val_acc",
            out=out + "/s",
            early_stop=early_stop,
            early_stop_options={"max_steps": spec["epochs"]} if early_stop else None,
            executor=LocalExecutor(1, cpus_per_trial=cpus),
            time_budget_s=spec["budget_s"],
        )
        _, trials = read_study(out + "/s")
    inside = [t for t in trials.values() if t.ended is not None and t.ended <= spec["budget_s"]]
    done = [t.value for t in inside if t.status == "completed"]
    return {
        "evaluated": sum(t.status in ("completed", "stopped") for t in inside),
        "completed": len(done),
        "stopped": sum(t.status == "stopped" for t in inside),
        "best": max(done, default=float("nan")),
    }


def early_stopping_table(spec: dict, cpus: int = 1, repeats: int = 2) -> tuple[str, float]:
    """Random search with and without ASHA, same objective, same wall budget, in this run.

    The arms alternate (none, asha, asha, none, ...) so a change in the machine's load between them
    falls on both; the counts are summed over the repeats.
    """
    order = [a for k in range(repeats) for a in ((None, "asha") if k % 2 == 0 else ("asha", None))]
    totals: dict[str | None, dict] = {}
    for arm in order:
        r = _budget_arm(arm, spec, cpus)
        t = totals.setdefault(arm, {"evaluated": 0, "completed": 0, "stopped": 0, "best": float("nan")})
        for key in ("evaluated", "completed", "stopped"):
            t[key] += r[key]
        t["best"] = r["best"] if t["best"] != t["best"] else max(t["best"], r["best"])
        print(f"  budget arm {arm or 'none'}: {r}", flush=True)
    minutes = repeats * spec["budget_s"] / 60
    base = totals[None]["evaluated"]
    ratio = totals["asha"]["evaluated"] / base if base else float("nan")
    rows = [
        [
            name,
            t["evaluated"],
            t["completed"],
            t["stopped"],
            t["best"],
            t["evaluated"] / minutes,
            t["evaluated"] / base if base else float("nan"),
        ]
        for name, t in (("none", totals[None]), ("asha", totals["asha"]))
    ]
    table = markdown_table(
        [
            "early stopping",
            "configs evaluated",
            "completed",
            "stopped early",
            "best val_acc",
            "configs/min",
            "ratio",
        ],
        rows,
    )
    return table, ratio


def cartpole_tables(iterations: int) -> list[str]:
    """ES on CartPole-v1: evaluation return against iterations, and iteration time with 1 and 2 workers.

    Both runs do the same work (the result is bit-identical for any number of workers), one spawned
    single-threaded process against two; empty when gymnasium is not installed.
    """
    try:
        import gymnasium  # noqa: F401
    except ImportError:
        print("gymnasium is not installed (pip install 'escala[control]'): the CartPole rows are skipped")
        return []
    from escala.search.es import es_cartpole

    one = es_cartpole(iterations=iterations, workers=1, spawn=True)
    two = es_cartpole(iterations=iterations, workers=2)
    same = one["theta"] == two["theta"]
    h = one["history"]
    marks = sorted({max(1, len(h) * k // 4) for k in range(1, 5)})
    curve = markdown_table(
        ["ES iteration", "return (5 held-out episodes)", "mean fitness"],
        [[0, one["initial"]["return"], float("nan")]]
        + [[i, h[i - 1]["return"], h[i - 1]["mean_fitness"]] for i in marks],
    )
    t1 = h[-1]["step_s"] / len(h)  # the ES iterations alone: the held-out evaluation is not split
    t2 = two["history"][-1]["step_s"] / len(two["history"])
    workers = markdown_table(
        ["ES workers", "s / iteration", "speedup", "same policy as 1 worker"],
        [[1, t1, 1.0, "yes"], [2, t2, t1 / t2, "yes" if same else "NO"]],
    )
    text = (
        "Evolution strategies on CartPole-v1 (gymnasium): linear greedy policy from zero weights, 16 "
        "antithetic pairs, sigma 0.1, Adam lr 0.1, 2 episodes per fitness (starts shared by the "
        "iteration), return of 5 held-out episodes (500 at most); ES iteration time (evaluation excluded) with 1 and 2 "
        f"workers over the same {iterations} iterations."
    )
    print(curve, workers, sep="\n", flush=True)
    return [text, curve, workers]


# Two sizes of the supervised ES problem: the small net of the accuracy curve, whose iteration
# (60 forward passes of a 64-32-10 MLP on 256 samples) lasts a few ms, and a wider one whose iteration
# lasts ~0.15 s, where splitting the fitness evaluations is worth the per-iteration synchronisation.
ES_SIZES = (
    ("64-32-10, batch 256", (32,), 256),
    ("64-256-256-10, batch 1024", (256, 256), 1024),
)


def es_tables(spec: dict) -> tuple[str, str]:
    """ES on digits: accuracy against iterations, and iterations/s against workers for two net sizes."""
    from escala.search.es import es_digits

    pairs = spec["es_pairs"]
    curve_run = es_digits(iterations=spec["es_iterations"], workers=1, pairs=pairs, spawn=True)
    h = curve_run["history"]
    marks = sorted({max(1, len(h) * k // 4) for k in range(1, 5)})
    curve = markdown_table(
        ["ES iteration", "val_acc", "mean fitness"],
        [[0, curve_run["initial"]["val_acc"], float("nan")]]
        + [[i, h[i - 1]["val_acc"], h[i - 1]["mean_fitness"]] for i in marks],
    )
    rows = []
    for label, hidden, batch in ES_SIZES:
        iterations = spec["es_iterations"] if batch <= 256 else max(4, spec["es_iterations"] // 4)
        best: dict[int, float] = {}
        theta: dict[int, list] = {}
        for workers in (1, 2, 1, 2):
            run = es_digits(
                iterations=iterations,
                workers=workers,
                pairs=pairs,
                spawn=True,
                hidden=hidden,
                problem_options={"batch": batch},
            )
            per_it = run["history"][-1]["step_s"] / len(run["history"])
            best[workers] = min(best.get(workers, float("inf")), per_it)
            theta[workers] = run["theta"]
            print(f"  ES {label}, {workers} worker(s): {per_it * 1000:.1f} ms / iteration", flush=True)
        same = "yes" if theta[1] == theta[2] else "NO"
        for workers in (1, 2):
            rows.append(
                [
                    label,
                    workers,
                    iterations,
                    best[workers] * 1000,
                    1 / best[workers],
                    best[1] / best[workers],
                    "yes" if workers == 1 else same,
                ]
            )
    workers_table = markdown_table(
        [
            "ES problem",
            "workers",
            "iterations",
            "ms / iteration",
            "iterations/s",
            "speedup",
            "same theta as 1",
        ],
        rows,
    )
    print(curve, workers_table, sep="\n", flush=True)
    return curve, workers_table


def _optuna_arm(sampler_name: str, spec: dict, cpus: int) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = (
        optuna.samplers.TPESampler(seed=0) if sampler_name == "tpe" else optuna.samplers.RandomSampler(seed=0)
    )

    def objective(trial):
        config = {
            "epochs": spec["epochs"],
            "lr": trial.suggest_float("lr", 1e-3, 0.5, log=True),
            "hidden": HIDDEN[trial.suggest_categorical("hidden", list(range(len(HIDDEN))))],
            "batch_size": trial.suggest_int("batch_size", 16, 128, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        }
        with tempfile.TemporaryDirectory() as d:
            return train_trial(config, Reporter(trial.number, d, {"cpus": cpus}, lambda s, m: False))[
                "val_acc"
            ]

    study = optuna.create_study(direction="maximize", sampler=sampler)
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=spec["trials"], n_jobs=1)
    wall = time.perf_counter() - t0
    return {"best": study.best_value, "completed": len(study.trials), "stopped": 0, "wall": wall}


def main(quick: bool = False, docs: str | None = None) -> None:
    spec = QUICK if quick else FULL
    # One thread per trial everywhere: the trials are small, and a shared machine punishes
    # multi-threaded processes that wait on each other far more than single-threaded ones.
    cores = 1
    arms: list[tuple[str, dict]] = []
    runs = [
        ("escala random", lambda: _escala_arm("random", spec, cores)),
        ("escala ga", lambda: _escala_arm("ga", spec, cores, popsize=max(4, spec["trials"] // 4))),
        ("escala de", lambda: _escala_arm("de", spec, cores, popsize=max(4, spec["trials"] // 4))),
        ("escala random + asha", lambda: _escala_arm("random", spec, cores, early_stop="asha")),
    ]
    try:
        import optuna  # noqa: F401

        runs += [
            ("optuna tpe", lambda: _optuna_arm("tpe", spec, cores)),
            ("optuna random", lambda: _optuna_arm("random", spec, cores)),
        ]
    except ImportError:
        print("optuna is not installed (pip install optuna): its rows are skipped")
    # start the local executor's fork server (imports torch, scikit-learn) before any timing
    _escala_arm("random", {**spec, "trials": 1, "epochs": 1}, cores)
    for name, fn in runs:
        result = fn()
        arms.append((name, result))
        print(
            f"{name}: best val_acc {result['best']:.4f}, {result['completed']} completed, {result['wall']:.1f}s",
            flush=True,
        )
    ref = dict(arms).get("optuna tpe")
    rows = []
    for name, r in arms:
        configs_per_min = (r["completed"] + r["stopped"]) / r["wall"] * 60
        rows.append(
            [
                name,
                r["best"],
                r["best"] - ref["best"] if ref else float("nan"),
                r["completed"],
                r["stopped"],
                r["wall"],
                configs_per_min,
                ref["wall"] / r["wall"] if ref else float("nan"),
            ]
        )
    table = markdown_table(
        [
            "search",
            "best val_acc",
            "vs TPE",
            "completed",
            "stopped early",
            "wall s",
            "configs/min",
            "speed vs TPE",
        ],
        rows,
    )

    # throughput of parallel trials
    one = _escala_arm("random", spec, 1, parallel=1)
    two = _escala_arm("random", spec, 1, parallel=2)
    par = markdown_table(
        ["parallel trials", "wall s", "trials/min", "speedup"],
        [
            [1, one["wall"], spec["trials"] / one["wall"] * 60, 1.0],
            [2, two["wall"], spec["trials"] / two["wall"] * 60, one["wall"] / two["wall"]],
        ],
    )
    print(par, flush=True)

    # early stopping at the same wall budget
    asha_table, asha_ratio = early_stopping_table(spec, cores)
    print(asha_table, flush=True)

    # evolution strategies
    es_curve, es_workers = es_tables(spec)
    cartpole = cartpole_tables(spec["cartpole_iterations"])
    body = "\n\n".join(
        [
            "## search: escala searchers vs Optuna (`escala bench search`)",
            f"{machine_line()} Digits MLP, {spec['epochs']} epochs per trial, {spec['trials']} trials per search, "
            "one trial at a time; objective = final validation accuracy. `vs TPE` is the difference in best "
            "accuracy; `speed vs TPE` = TPE wall time / this wall time (process start-up included for escala). "
            f"ASHA: eta 4, min 1 epoch: rungs at epochs 1 and 4, the trial's end at {spec['epochs']}.",
            table,
            f"Parallel trials (random search, {spec['trials']} trials, one thread each):",
            par,
            f"Early stopping at the same wall budget: random search (same seed, so the same configurations "
            f"in the same order) for {spec['budget_s']} s per arm, {spec['epochs']} epochs per trial, without and "
            f"with ASHA (eta 4, rungs at epochs 1 and 4), arms alternated, two runs each, counts summed; a "
            f"configuration is evaluated when it completed or was stopped inside the budget. ASHA evaluates "
            f"{asha_ratio:.2f}x as many configurations; `best val_acc` is the best completed trial of each "
            f"arm. Without a scheduler a configuration costs {spec['epochs']} epochs; under ASHA about "
            f"1 + 3/4 + 12/16 = 2.5 epochs on average (a trial reports each epoch as it ends and is stopped there, "
            f"no pause), so ~6x is the "
            f"ceiling.",
            asha_table,
            f"Evolution strategies on the digits MLP ({spec['es_pairs']} antithetic pairs per iteration, fitness "
            "shaping, Adam): validation accuracy against iterations.",
            es_curve,
            "ES iterations per second against workers (spawned single-threaded processes sharing noise seeds, "
            "only the 2 x pairs scalar fitnesses travel, one all-reduce per iteration; time of the ES "
            "iterations alone, after gloo has connected, evaluation excluded; runs alternated 1, 2, 1, 2 and "
            "the faster of each kept). An iteration splits its 2 x pairs fitness evaluations over the "
            "workers; every worker still regenerates all the noise and applies the update, and waits for "
            "the all-reduce, so a short iteration does not split well.",
            es_workers,
            *cartpole,
        ]
    )
    print(table)
    update_section(docs, "search", body)

"""``escala search``: hyperparameter/architecture search over ``escala train``'s fields, and ``show``.

    escala search --space space.toml --searcher random --trials 20 --parallel 2 --out runs/search
    escala search show runs/search

The space file is TOML over the train fields: a list is a choice (``hidden = [[64], [128, 64]]``), an
inline table a distribution (``lr = {loguniform = [1e-3, 0.3]}``, ``batch_size = {integer = [16,
128]}``, ``hidden = {layers = [1, 3], widths = [32, 64, 128]}``), anything else a constant
(``epochs = 5``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="search hyperparameters or architectures over escala train (or: search show DIR)",
        description="Search over escala train's fields; 'escala search show DIR' prints a study.",
    )
    p.add_argument("action", nargs="?", choices=["show"], help="'show DIR': print the trials of a study")
    p.add_argument("dir", nargs="?", help="study directory for 'show'")
    p.add_argument(
        "--space", metavar="FILE", help="TOML file: train fields -> lists, distributions, constants"
    )
    p.add_argument("--searcher", default="random", choices=["grid", "random", "ga", "de", "evolution"])
    p.add_argument("--trials", type=int, help="trials to run in all [default: the grid's size, else 10]")
    p.add_argument(
        "--time-budget", type=float, metavar="S", help="propose no trial after S seconds of wall time"
    )
    p.add_argument("--parallel", type=int, default=1, help="trials running at the same time [default: 1]")
    p.add_argument("--executor", default="local", choices=["local", "ray"], help="where trials run")
    p.add_argument("--address", help="Ray cluster address for --executor ray (default: a local Ray)")
    p.add_argument("--early-stop", choices=["none", "median", "asha"], default="none", help="stop bad trials")
    p.add_argument(
        "--eta", type=float, help="asha: reduction factor, 1/eta of trials pass a rung [default: 4]"
    )
    p.add_argument(
        "--min-epochs", type=float, help="asha: first rung; median: grace period, in epochs [default: 1]"
    )
    p.add_argument("--metric", default="val_acc", help="the objective, a key of the trial summary")
    p.add_argument("--direction", choices=["max", "min"], help="[default: min for *loss, else max]")
    p.add_argument("--seed", type=int, default=0, help="seed of the searcher")
    p.add_argument("--popsize", type=int, help="population of ga/de/evolution [default: 10]")
    p.add_argument("--mutation", type=float, help="ga: per-parameter mutation probability; de: F")
    p.add_argument("--crossover", type=float, help="ga: crossover probability; de: CR")
    p.add_argument("--cpus-per-trial", type=int, help="torch threads per trial [default: cores / parallel]")
    p.add_argument("--gpus", default="", help="GPU ids the trials share, e.g. 0,1")
    p.add_argument("--gpus-per-trial", type=int, default=0, help="GPUs given to each trial")
    p.add_argument("--resume", action="store_true", help="continue the study in --out")
    p.add_argument("--out", help="study directory: trials.jsonl, summary.json, best.png, trials/")
    p.set_defaults(func=run)


def _searcher_options(args) -> dict:
    opts = {}
    if args.popsize is not None:
        opts["population" if args.searcher == "evolution" else "popsize"] = args.popsize
    for name in ("mutation", "crossover"):
        if getattr(args, name) is not None:
            opts[name] = getattr(args, name)
    return opts


def run(args: argparse.Namespace) -> int:
    from escala.errors import UserError

    if args.action == "show":
        if not args.dir:
            raise UserError("escala search show needs the study directory: escala search show DIR")
        return show(args.dir)
    if args.dir:
        raise UserError(f"unexpected argument {args.dir!r}; did you mean 'escala search show {args.dir}'?")
    if not args.space or not args.out:
        raise UserError("escala search needs --space FILE and --out DIR (or: escala search show DIR)")
    return search(args)


def search(args) -> int:
    from escala.config.load import read_toml
    from escala.errors import UserError
    from escala.search.report import plot_best, trials_table, write_hparams
    from escala.search.searchers import make_searcher
    from escala.search.space import Space
    from escala.search.stopping import make_stopper
    from escala.search.store import StudyStore
    from escala.search.study import run_study
    from escala.search.trainable import check_space, train_trial

    space = Space(read_toml(args.space))
    check_space(space)
    direction = args.direction or ("min" if args.metric.endswith("loss") else "max")
    opts = _searcher_options(args)
    if args.searcher in ("grid", "random") and opts:
        raise UserError(f"--popsize/--mutation/--crossover do not apply to --searcher {args.searcher}")
    searcher = make_searcher(args.searcher, space, direction, args.seed, **opts)
    trials = args.trials if args.trials is not None else (len(searcher) if args.searcher == "grid" else 10)
    if trials < 1 or args.parallel < 1:
        raise UserError("--trials and --parallel must be >= 1")
    if args.time_budget is not None and args.time_budget <= 0:
        raise UserError(f"--time-budget must be > 0 seconds, got {args.time_budget}")
    epochs = space.constants.get("epochs")
    # a rung at a trial's last epoch would decide nothing: the trial is done there anyway
    stop_opts = {"max_steps": epochs} if args.early_stop == "asha" and isinstance(epochs, int) else {}
    if args.eta is not None:
        if args.early_stop != "asha":
            raise UserError("--eta applies to --early-stop asha only")
        stop_opts["eta"] = args.eta
    if args.min_epochs is not None:
        if args.early_stop == "none":
            raise UserError("--min-epochs applies to --early-stop asha or median")
        stop_opts["min_steps" if args.early_stop == "asha" else "grace_steps"] = args.min_epochs
    stopper = make_stopper(args.early_stop, direction, **stop_opts)
    gpus = [int(g) for g in args.gpus.replace(",", " ").split()] if args.gpus else []
    if args.address and args.executor != "ray":
        raise UserError(f"--address applies to --executor ray only (got --executor {args.executor})")
    if gpus and args.executor == "ray":
        raise UserError("--gpus applies to --executor local; Ray assigns GPUs itself (use --gpus-per-trial)")
    if args.executor == "ray":
        from escala.search.executors.ray import RayExecutor

        executor = RayExecutor(args.parallel, args.address, args.cpus_per_trial, args.gpus_per_trial)
    else:
        from escala.search.executors.local import LocalExecutor

        executor = LocalExecutor(args.parallel, args.cpus_per_trial, gpus, args.gpus_per_trial)
    settings = {
        "searcher": args.searcher,
        "searcher_options": opts,
        "seed": args.seed,
        "space": repr(space),
        "metric": args.metric,
        "direction": direction,
        "early_stop": args.early_stop,
        "objective": "escala train",
        "trials": trials,
    }
    out = Path(args.out)
    store = StudyStore(out, settings, resume=args.resume)
    try:
        print(
            f"escala search: {args.searcher}, {trials} trials, {args.parallel} at a time -> {out}", flush=True
        )

        def progress(kind, trial):
            value = f" {args.metric}={trial.value:.4f}" if trial.value is not None else ""
            print(
                f"  trial {trial.id} {kind}{value}" + (f": {trial.error}" if trial.error else ""), flush=True
            )

        summary = run_study(
            train_trial,
            searcher,
            executor,
            store,
            trials,
            args.metric,
            stopper,
            on_event=progress,
            time_budget_s=args.time_budget,
        )
        summary["trials_planned"] = trials
        from escala.metrics import write_json

        write_json(out / "summary.json", summary)
        plot_best(out / "best.png", store.trials, direction, args.metric)
        write_hparams(out / "tb", store.trials, args.metric)
        print(trials_table(store.trials, args.metric, direction, limit=10))
        best = summary["best_value"]
        print(
            f"best {args.metric} {best if best is None else f'{best:.4f}'} with {json.dumps(summary['best_config'])}; "
            f"{summary['trials_completed']} completed, {summary['trials_stopped_early']} stopped early, "
            f"{summary['trials_failed']} failed in {summary['wall_s']:.1f}s"
        )
    finally:
        store.close()
    return 0


def show(directory: str) -> int:
    from escala.search.report import trials_table
    from escala.search.store import read_study

    settings, trials = read_study(directory)
    metric, direction = settings.get("metric", "val_acc"), settings.get("direction", "max")
    print(
        f"{directory}: {settings.get('searcher', '?')} search, {len(trials)} of {settings.get('trials', '?')} trials"
    )
    print(trials_table(trials, metric, direction))
    summary = Path(directory) / "summary.json"
    if summary.exists():
        s = json.loads(summary.read_text())
        print(
            f"best {metric} {s['best_value']} (trial {s.get('best_trial')}): {json.dumps(s['best_config'])}"
        )
    return 0

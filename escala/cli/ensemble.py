"""``escala ensemble``: train M members in parallel, combine their predictions, compare with the members.

    escala ensemble --config examples/digits.toml --members 4 --parallel 2 --out runs/ens
    escala ensemble --from-search runs/search --top 3 --out runs/ens-top3

Members are M seeds of one train config (``--members M`` or ``--seeds 0,1,2``), or the ``--top K``
configurations of a finished ``escala search`` directory. They train as the trials of a study (the
local executor, ``--parallel`` at a time) on one data split, and the ensemble is evaluated on that
split's validation set: intra-graph (all members in one ``vmap``) when they share an architecture,
inter-graph (one process per member) otherwise or with ``--inference inter``. ``DIR/summary.json``
holds each member's accuracy, the best and the mean member, the ensemble's (mean of probabilities
and vote) and its gain over the best member.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ensemble",
        help="train M members in parallel (seeds or a search's top-k) and evaluate their ensemble",
        description="Train ensemble members in parallel and evaluate the ensemble against its members.",
    )
    p.add_argument("--config", metavar="FILE", help="TOML file of escala train fields for every member")
    p.add_argument("--members", type=int, help="M members: seeds 0..M-1 of the config [default: 3]")
    p.add_argument("--seeds", help="the members' seeds, e.g. 0,1,2 (instead of --members)")
    p.add_argument("--from-search", metavar="DIR", help="take the members' configs from this search")
    p.add_argument("--top", type=int, help="with --from-search: the K best completed trials [default: 3]")
    p.add_argument("--parallel", type=int, default=2, help="members training at the same time [default: 2]")
    p.add_argument("--combine", choices=["mean", "vote"], default="mean", help="headline combination")
    p.add_argument(
        "--inference",
        choices=["auto", "intra", "inter"],
        default="auto",
        help="intra: one vmap over stacked members; inter: a process per member [default: intra if possible]",
    )
    p.add_argument("--out", required=True, help="directory: members/ (a study), summary.json")
    p.set_defaults(func=run)


def _members(args) -> tuple[dict, list[dict], str]:
    """The base config and one config delta per member; raises UserError on bad input."""
    from escala.config import build_config
    from escala.config.load import read_toml
    from escala.errors import UserError
    from escala.search.trainable import RESERVED

    base = read_toml(args.config) if args.config else {}
    for key in RESERVED:
        if key in base:
            raise UserError(f"--config: '{key}' is set by escala ensemble itself (use --out)")
    build_config(overrides={**base, "out": "/tmp/x"})  # every field valid, with one line if not
    if args.from_search:
        if args.members is not None or args.seeds:
            raise UserError("--from-search takes --top K, not --members/--seeds")
        from escala.search.ensemble import top_configs
        from escala.search.store import read_study

        if not Path(args.from_search).is_dir():
            raise UserError(f"--from-search {args.from_search}: no such directory")
        k = 3 if args.top is None else args.top
        if k < 2:
            raise UserError(f"--top must be >= 2 (an ensemble of one is its member), got {k}")
        _, trials = read_study(args.from_search)
        done = sum(t.status == "completed" for t in trials.values())
        if k > done:
            raise UserError(f"--top {k}: the study in {args.from_search} has only {done} completed trial(s)")
        return base, top_configs(args.from_search, k), f"top {k} of {args.from_search}"
    if args.top is not None:
        raise UserError("--top needs --from-search DIR")
    if args.seeds:
        try:
            seeds = [int(s) for s in args.seeds.replace(",", " ").split()]
        except ValueError:
            raise UserError(f"--seeds must be integers separated by commas, got {args.seeds!r}") from None
        if args.members is not None:
            raise UserError("give --members M or --seeds LIST, not both")
    else:
        m = 3 if args.members is None else args.members
        seeds = list(range(m))
    if len(set(seeds)) < 2:
        raise UserError(f"an ensemble needs at least 2 members with different seeds, got {len(set(seeds))}")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds repeats a seed: {args.seeds}")
    return base, [{"seed": s} for s in seeds], f"seeds {','.join(map(str, seeds))}"


def run(args: argparse.Namespace) -> int:
    from escala.errors import UserError
    from escala.metrics import write_json
    from escala.search import ensemble

    if args.parallel < 1:
        raise UserError(f"--parallel must be >= 1, got {args.parallel}")
    base, deltas, source = _members(args)
    out = Path(args.out)
    if (out / "members").exists():
        raise UserError(f"--out {out} already holds an ensemble (members/); choose another directory")
    t0 = time.perf_counter()
    print(
        f"escala ensemble: {len(deltas)} members ({source}), {args.parallel} at a time -> {out}", flush=True
    )
    dirs = ensemble.train_members(base, out / "members", configs=deltas, parallel=args.parallel)
    train_s = time.perf_counter() - t0

    from escala.config import build_config
    from escala.train.launch import resolve_data

    cfg = build_config(overrides={**base, "seed": ensemble.data_seed(base), "out": str(out)})
    data = resolve_data(None, cfg)  # the split every member trained on
    x, y = data.val.x, data.val.y
    models = [ensemble.load_member(d, data.input_shape, data.num_classes) for d in dirs]
    same = len({tuple((k, tuple(v.shape)) for k, v in m.state_dict().items()) for m in models}) == 1
    how = args.inference if args.inference != "auto" else ("intra" if same else "inter")
    if how == "intra" and not same:
        raise UserError("--inference intra needs members of one architecture; use --inference inter")
    t1 = time.perf_counter()
    if how == "intra":
        probs = ensemble.intra_graph_probs(models, x)
    else:
        probs = ensemble.inter_graph_probs(dirs, x, data.input_shape, data.num_classes)
    infer_s = time.perf_counter() - t1
    report = ensemble.evaluate(probs, y)
    headline = report["ensemble_acc"] if args.combine == "mean" else report["vote_acc"]
    mean_member = sum(report["member_acc"]) / len(report["member_acc"])
    summary = {
        "members": report["members"],
        "source": source,
        "combine": args.combine,
        "inference": how,
        "accuracy": headline,
        "ensemble_acc": report["ensemble_acc"],
        "vote_acc": report["vote_acc"],
        "best_member_acc": report["best_member_acc"],
        "mean_member_acc": mean_member,
        "member_acc": report["member_acc"],
        "gain_over_best": headline - report["best_member_acc"],
        "gain_over_mean": headline - mean_member,
        "val_samples": len(y),
        "member_configs": [{**base, **d} for d in deltas],
        "member_dirs": [str(d) for d in dirs],
        "train_s": round(train_s, 3),
        "inference_s": round(infer_s, 4),
    }
    write_json(out / "summary.json", summary)
    print(
        f"ensemble ({args.combine}, {how}-graph) {headline:.4f}, best member {report['best_member_acc']:.4f}, "
        f"mean member {mean_member:.4f} on {len(y)} validation samples -> {out / 'summary.json'}"
    )
    print(json.dumps({k: summary[k] for k in ("ensemble_acc", "vote_acc", "gain_over_best")}))
    return 0

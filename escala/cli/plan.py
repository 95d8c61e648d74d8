"""``escala plan``: predict step time, memory and scaling of each strategy on a cluster, and recommend one."""

from __future__ import annotations

import argparse
from pathlib import Path

from escala.cli.common import positive_ints
from escala.errors import UserError

EPILOG = """examples:
  escala plan --model resnet50 --batch-size 32 --cluster examples/clusters/goyal2017-bigbasin.toml --out runs/plan
  escala plan --model resnet50 --batch-size 8192 --scaling strong --cluster examples/clusters/v100-10gbe.toml --devices 32
  escala plan --model mlp --batch-size 64 --cluster examples/clusters/this-machine.toml
  escala plan --dry-run --devices 64 --layout pipeline=4,data=16 --cluster examples/clusters/v100-10gbe.toml
"""


def register(sub: argparse._SubParsersAction) -> None:
    from escala.models import MODELS
    from escala.plan.planner import STRATEGIES

    p = sub.add_parser(
        "plan",
        help="predict step time, memory and scaling of each strategy on a cluster; recommend the fastest that fits",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", choices=MODELS, help="zoo model")
    p.add_argument(
        "--batch-size",
        type=int,
        metavar="B",
        help="samples per replica per step (--scaling strong: global batch)",
    )
    p.add_argument("--cluster", metavar="FILE", help="cluster description (TOML; see examples/clusters/)")
    p.add_argument(
        "--devices",
        type=int,
        default=0,
        metavar="N_MAX",
        help="largest device count (default: the cluster's)",
    )
    p.add_argument("--out", default=None, metavar="DIR", help="write summary.json and throughput.png here")
    p.add_argument(
        "--scaling", default="weak", choices=("weak", "strong"), help="weak: B per replica; strong: B in all"
    )
    p.add_argument("--strategies", default="", metavar="S,S,...", help=f"subset of: {', '.join(STRATEGIES)}")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"), help="compute precision")
    p.add_argument(
        "--optimizer", default="sgd", choices=("sgd", "adamw"), help="optimizer (sgd with momentum)"
    )
    p.add_argument(
        "--input-shape", default="", metavar="C,H,W", help="one sample's shape (default: by model)"
    )
    p.add_argument("--num-classes", type=int, default=0, metavar="K", help="classes (default: by model)")
    p.add_argument("--hidden", default="128,64", metavar="N,N,...", help="hidden widths of the mlp model")
    p.add_argument("--local-sgd-h", type=int, default=8, metavar="H", help="localsgd: average every H steps")
    p.add_argument(
        "--microbatches", type=int, default=0, metavar="M", help="pipeline micro-batches (0: 4 x stages)"
    )
    p.add_argument("--dry-run", action="store_true", help="only check --layout on --devices processes")
    p.add_argument(
        "--layout",
        default="",
        metavar="pipeline=K|tensor=T|spatial=P,data=D",
        help="process layout for --dry-run (one model split, as escala train runs it)",
    )
    p.set_defaults(func=run)


def dry_run(args: argparse.Namespace) -> int:
    from escala.plan.cluster import load_cluster
    from escala.plan.layout import parse_layout, validate_layout
    from escala.plan.profile import profile_model

    if args.devices < 1:
        raise UserError("--dry-run needs --devices N, the world size to check the layout on")
    asked = parse_layout(args.layout) if args.layout else {}
    per_node = cluster_devices = layers = None
    if args.cluster:
        cluster = load_cluster(args.cluster, measure=lambda _threads: {})
        per_node, cluster_devices = cluster.devices_per_node, cluster.max_devices
    if args.model:
        layers = len(profile_model(args.model).children)
    layout = validate_layout(
        args.devices,
        pipeline=asked.get("pipeline", 1),
        tensor=asked.get("tensor", 1),
        spatial=asked.get("spatial", 1),
        data=asked.get("data"),
        devices_per_node=per_node,
        cluster_devices=cluster_devices,
        model_layers=layers,
        batch=args.batch_size,
        microbatches=args.microbatches or None,
    )
    split = f"{layout['kind']} {layout['parts']} x " if layout["parts"] > 1 else ""
    print(
        f"layout ok: {layout['world']} processes = {split}data {layout['data']} (escala train's layout: "
        f"rank = replica x {layout['parts']} + part); rank 0 groups: {layout['rank0_groups']}"
        + (f"; {layout['nodes']} node(s)" if "nodes" in layout else "")
    )
    return 0


def run(args: argparse.Namespace) -> int:
    if args.dry_run:
        return dry_run(args)
    if args.layout:
        raise UserError("--layout is checked with --dry-run; add --dry-run --devices N")
    for flag, value in (
        ("--model", args.model),
        ("--batch-size", args.batch_size),
        ("--cluster", args.cluster),
    ):
        if value is None:
            raise UserError(f"{flag} is required (see escala plan --help)")
    from escala.plan.cluster import load_cluster
    from escala.plan.planner import STRATEGIES, make_plan, no_fit_message
    from escala.plan.profile import profile_model
    from escala.plan.report import check_out_dir, print_plan, write_plan
    from escala.plan.step import Setting

    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.local_sgd_h < 1:
        raise UserError(f"--local-sgd-h {args.local_sgd_h}: must be at least 1")
    if args.microbatches < 0:
        raise UserError(f"--microbatches {args.microbatches}: must be at least 1 (0: automatic)")
    strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip()) or STRATEGIES
    for name in strategies:
        if name not in STRATEGIES:
            raise UserError(f"--strategies: {name!r} is not a strategy; choose from {', '.join(STRATEGIES)}")
    out = Path(args.out) if args.out else None
    if out is not None:
        check_out_dir(out)
    cluster = load_cluster(args.cluster)
    n_max = args.devices or cluster.max_devices
    if n_max < 1:
        raise UserError(f"--devices {args.devices}: must be at least 1")
    if n_max > cluster.max_devices:
        raise UserError(f"--devices {n_max}: the cluster {args.cluster} has {cluster.max_devices} devices")
    profile = profile_model(
        args.model,
        input_shape=positive_ints(args.input_shape, "--input-shape") if args.input_shape else None,
        num_classes=args.num_classes or None,
        hidden=positive_ints(args.hidden, "--hidden"),
        precision=args.precision,
        optimizer=args.optimizer,
    )
    setting = Setting(
        cluster,
        profile,
        args.batch_size,
        args.scaling,
        localsgd_h=args.local_sgd_h,
        microbatches=args.microbatches,
    )
    plan = make_plan(setting, n_max, strategies)
    if not plan.rows:
        raise UserError(
            f"no strategy applies: {plan.skipped[0]['reason'] if plan.skipped else 'nothing to predict'}"
        )
    print_plan(plan)
    if out is not None:
        write_plan(plan, out, n_max)
        print(f"-> {out / 'summary.json'}, {out / 'throughput.png'}")
    if plan.recommended is None:
        raise UserError(no_fit_message(plan))
    return 0

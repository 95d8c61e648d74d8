"""``escala memory``: how much memory will training this model take, and what fits a budget."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from escala.cli.common import positive_ints
from escala.errors import UserError

EPILOG = """examples:
  escala memory --model resnet50 --batch-size 32
  escala memory --model lenet300 --batch-size 256 --optimizer adamw --out runs/mem
  escala memory --model resnet50 --batch-size 64 --budget 6GiB --out runs/mem50
"""

DEFAULT_SHAPES = {"resnet50": ((3, 224, 224), 1000), "resnet20": ((3, 32, 32), 10)}
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise UserError(f"--budget {text!r}: give bytes, e.g. 2000000000, 2GB or 1.5GiB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def register(sub: argparse._SubParsersAction) -> None:
    from escala.models import MODELS

    p = sub.add_parser(
        "memory",
        help="estimate training memory per layer, plan it, checkpoint activations to a budget",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, choices=MODELS, help="zoo model")
    p.add_argument("--batch-size", type=int, required=True, metavar="B", help="samples per step")
    p.add_argument(
        "--input-shape",
        default="",
        metavar="C,H,W",
        help="one sample's shape (default: by model, MNIST 1,28,28)",
    )
    p.add_argument("--num-classes", type=int, default=0, metavar="K", help="classes (default: by model)")
    p.add_argument("--hidden", default="128,64", metavar="N,N,...", help="hidden widths of the mlp model")
    p.add_argument(
        "--precision", default="fp32", choices=("fp32", "bf16", "fp16"), help="activation precision"
    )
    p.add_argument(
        "--optimizer", default="sgd", choices=("sgd", "adamw"), help="optimizer (sgd with momentum)"
    )
    p.add_argument(
        "--budget", default=None, metavar="BYTES", help="memory budget: plan activation checkpointing"
    )
    p.add_argument("--out", default=None, metavar="DIR", help="write summary.json and memory.png here")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier summary in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from escala.memory.report import memory_report, print_report, write_report

    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be at least 1")
    shape, classes = DEFAULT_SHAPES.get(args.model, ((1, 28, 28), 10))
    if args.input_shape:
        shape = positive_ints(args.input_shape, "--input-shape")
    if args.num_classes:
        classes = args.num_classes
    out = Path(args.out) if args.out else None
    if out is not None and (out / "summary.json").exists() and not args.overwrite:
        raise UserError(
            f"--out {out} already holds summary.json; pass --overwrite or choose another directory"
        )
    report = memory_report(
        args.model,
        shape,
        classes,
        args.batch_size,
        hidden=positive_ints(args.hidden, "--hidden"),
        precision=args.precision,
        optimizer=args.optimizer,
        budget=parse_bytes(args.budget) if args.budget is not None else None,
    )
    print_report(report)
    if out is not None:
        write_report(report, out)
    return 0

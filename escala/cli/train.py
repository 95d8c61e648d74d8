"""``escala train``: one training run, configured by a TOML file and flags."""

from __future__ import annotations

import argparse

from escala.cli.common import add_dataclass_flags, given
from escala.config import TrainConfig, build_config

EPILOG = """examples:
  escala train --workers 2 --epochs 20 --out runs/demo
  escala train --config examples/digits.toml --lr 0.05 --out runs/lr005
  escala train --out runs/demo --resume --epochs 30
  torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29400 \\
      -m escala train --config job.toml --out /shared/run1
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (one or several workers)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a model. Flags override the --config file; every flag is a config key.",
    )
    p.add_argument("--config", default=None, metavar="FILE", help="TOML file with any of the fields below")
    add_dataclass_flags(p, TrainConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from escala.train import run_training

    config = build_config(args.config, given(args, exclude=("config", "command")))
    run_training(config)
    return 0

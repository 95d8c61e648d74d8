"""``escala compress``: prune, share, Huffman-code, quantize or distill a trained checkpoint."""

from __future__ import annotations

import argparse

from escala.cli.common import add_dataclass_flags, given

EPILOG = """examples:
  escala compress --checkpoint runs/lenet/checkpoints/last.pt --out runs/lenet-dc \\
      --prune 0.92 --prune-rounds 3 --share-bits 5 --huffman
  escala compress --checkpoint runs/cnn/checkpoints/last.pt --out runs/cnn-int8 --int8 static
  escala compress --checkpoint runs/small/checkpoints/last.pt --out runs/distilled \\
      --distill-from runs/big/checkpoints/last.pt --temperature 4 --munge-samples 5000
  escala compress --checkpoint CKPT --out DIR --recipe recipe.toml     (keys = the flags below)
"""


def register(sub: argparse._SubParsersAction) -> None:
    from escala.compress.recipe import Recipe

    p = sub.add_parser(
        "compress",
        help="make a trained model smaller and faster (pruning, weight sharing, Huffman, int8, distillation)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compress the model of an escala checkpoint; writes OUT/model.escz and OUT/summary.json.",
    )
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint written by escala train")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--recipe", default=None, metavar="FILE", help="TOML recipe with any of the keys below")
    add_dataclass_flags(p, Recipe)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from escala.compress.pipeline import compress
    from escala.compress.recipe import build_recipe

    recipe = build_recipe(args.recipe, given(args, exclude=("checkpoint", "out", "recipe", "command")))
    compress(args.checkpoint, args.out, recipe)
    return 0

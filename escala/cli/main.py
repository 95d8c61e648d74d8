"""The ``escala`` command: one subcommand per file in this folder."""

from __future__ import annotations

import sys

from escala import __version__
from escala.cli import bench, compress, ensemble, memory, plan, search, train
from escala.cli.common import OneLineParser, run_guarded

SUBCOMMANDS = (train, bench, compress, search, ensemble, memory, plan)


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="escala", description="Train deep networks at scale on PyTorch.")
    parser.add_argument("--version", action="version", version=f"escala {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_guarded(args.func, args)


if __name__ == "__main__":
    sys.exit(main())

"""``escala bench``: benchmarks printed side by side with the peer a user would otherwise choose."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from escala.bench import BENCHMARKS

    p = sub.add_parser("bench", help="run a benchmark and update docs/benchmarks.md")
    p.add_argument("name", choices=sorted(BENCHMARKS), help="which benchmark")
    p.add_argument("--quick", action="store_true", help="fewer steps (a smoke run; numbers are noisier)")
    p.add_argument(
        "--docs",
        default="docs/benchmarks.md",
        metavar="FILE",
        help="markdown file whose section for this benchmark is replaced ('' to skip)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from escala.bench import run_benchmark

    run_benchmark(args.name, quick=args.quick, docs=args.docs or None)
    return 0

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
    p.add_argument(
        "--dataset",
        default=None,
        choices=("digits", "mnist"),
        help="data set of benchmarks that train (compress, precision); default digits, or mnist when "
        "ESCALA_MNIST_DIR is set",
    )
    p.add_argument(
        "--data-dir", default=None, metavar="DIR", help="directory of the MNIST IDX files (--dataset mnist)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from escala.bench import run_benchmark

    run_benchmark(
        args.name, quick=args.quick, docs=args.docs or None, dataset=args.dataset, data_dir=args.data_dir
    )
    return 0

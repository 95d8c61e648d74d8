"""Benchmarks behind ``escala bench``; each prints a table and replaces its section of docs/benchmarks.md.

A benchmark is a module with ``main(quick: bool, docs: str | None) -> None``; register it here by name.
A benchmark that can run on other data also takes ``dataset`` and ``data_dir`` keywords (``escala
bench NAME --dataset mnist --data-dir DIR``); :func:`run_benchmark` passes options only to a ``main``
that declares them and refuses them, in one line, for the others.
"""

from __future__ import annotations

import importlib
import inspect
import os

from escala.errors import UserError

BENCHMARKS: dict[str, str] = {
    "allreduce": "escala.bench.allreduce",
    "compress": "escala.bench.compress",
    "memory": "escala.bench.memory",
    "pipeline": "escala.bench.pipeline",
    "plan": "escala.bench.plan",
    "precision": "escala.bench.precision",
    "search": "escala.bench.search",
    "strategies": "escala.bench.strategies",
    "tensor": "escala.bench.tensor",
}


BENCH_DATASETS = ("digits", "mnist")


def bench_data(dataset: str | None, data_dir: str | None) -> tuple[str, str | None]:
    """The data set a benchmark runs on: the flags, else ``ESCALA_MNIST_DIR`` (MNIST), else digits.

    A ``data_dir`` alone means MNIST; the directory itself is checked by the loader (one line naming
    the missing file or directory).
    """
    if dataset is None and data_dir is None:
        data_dir = os.environ.get("ESCALA_MNIST_DIR") or None
    dataset = dataset or ("mnist" if data_dir else "digits")
    if dataset not in BENCH_DATASETS:
        raise UserError(
            f"--dataset {dataset!r} is not one a benchmark runs on; choose {', '.join(BENCH_DATASETS)}"
        )
    if dataset == "mnist" and not data_dir:
        raise UserError(
            "--dataset mnist needs --data-dir DIR, the directory holding the four MNIST IDX files"
        )
    if dataset == "digits" and data_dir:
        raise UserError(f"--data-dir {data_dir} is only for --dataset mnist (digits ships with scikit-learn)")
    return dataset, data_dir


def run_benchmark(name: str, quick: bool = False, docs: str | None = None, **options) -> None:
    """Run benchmark ``name``; ``options`` (e.g. ``dataset``, ``data_dir``; None = not given) go to its main."""
    main = importlib.import_module(BENCHMARKS[name]).main
    given = {k: v for k, v in options.items() if v is not None}
    accepted = inspect.signature(main).parameters
    for key in given:
        if key not in accepted:
            flag = "--" + key.replace("_", "-")
            takers = [
                n
                for n in sorted(BENCHMARKS)
                if key in inspect.signature(importlib.import_module(BENCHMARKS[n]).main).parameters
            ]
            raise UserError(
                f"benchmark {name} does not take {flag}"
                + (f"; benchmarks that do: {', '.join(takers)}" if takers else "")
            )
    main(quick=quick, docs=docs, **given)

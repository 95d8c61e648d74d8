"""Benchmarks behind ``escala bench``; each prints a table and replaces its section of docs/benchmarks.md.

A benchmark is a module with ``main(quick: bool, docs: str | None) -> None``; register it here by name.
"""

from __future__ import annotations

import importlib

BENCHMARKS: dict[str, str] = {
    "allreduce": "escala.bench.allreduce",
    "compress": "escala.bench.compress",
    "memory": "escala.bench.memory",
    "pipeline": "escala.bench.pipeline",
    "precision": "escala.bench.precision",
    "search": "escala.bench.search",
    "strategies": "escala.bench.strategies",
    "tensor": "escala.bench.tensor",
}


def run_benchmark(name: str, quick: bool = False, docs: str | None = None) -> None:
    importlib.import_module(BENCHMARKS[name]).main(quick=quick, docs=docs)

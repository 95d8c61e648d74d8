"""Benchmarks behind ``escala bench``; each prints a table and replaces its section of docs/benchmarks.md."""

from __future__ import annotations


def run_benchmark(name: str, quick: bool = False, docs: str | None = None) -> None:
    if name == "allreduce":
        from escala.bench.allreduce import main

        main(quick=quick, docs=docs)
        return
    raise ValueError(name)

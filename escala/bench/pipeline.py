"""``escala bench pipeline``: pipeline throughput and measured bubble against theory and the unsplit model.

A deep MLP of equal hidden layers is cut into K balanced stages (one process each, gloo) and trained
with GPipe and 1F1B for several micro-batch counts M, all in one run. Per configuration we report
samples/s, the measured bubble (mean over stages of 1 - compute time / step time, see
:mod:`escala.parallel.model.pipeline.engine`) next to the theory (K - 1)/(M + K - 1), the peak number
of micro-batches whose activations a stage holds (from the schedule), and the parameter memory of the
largest stage against the whole model. The unsplit model trained in one process on the same batches is
the peer. The first step (shape inference) is excluded.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from escala.bench.report import machine_line, markdown_table, update_section
from escala.bench.workload import mlp, random_batches
from escala.models import count_parameters
from escala.parallel.model.pipeline import (
    PipelineStageRunner,
    partition,
    schedule,
    simulate,
    theoretical_bubble,
)
from escala.runtime import spawn_workers
from escala.runtime.dist import set_threads

# Micro-batches must stay big enough that compute, not the per-message overhead of the engine, dominates.
# Input width = hidden width, so the K stages get equal parameter counts and equal work: the theory
# (K - 1)/(M + K - 1) assumes equal stage times, and an unbalanced cut would add its own idle time.
SPEC = {
    "features": 1024,
    "hidden": (1024,) * 8,
    "batch": 512,
    "steps": 8,
    "micro": (1, 2, 4, 8, 16),
    "stages": 2,
}
QUICK = {"features": 1024, "hidden": (1024,) * 4, "batch": 256, "steps": 5, "micro": (1, 2, 4, 8), "stages": 2}


_model, _batches = mlp, random_batches


def _unsplit(spec) -> float:
    set_threads(1, 1)  # one core, as each stage gets
    model, data = _model(spec), _batches(spec)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    t0 = 0.0
    for i, (x, y) in enumerate(data):
        if i == 1:
            t0 = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return spec["batch"] * (len(data) - 1) / (time.perf_counter() - t0)


def _stage_worker(ctx, spec, sched, micro, out_file):
    k, batch = ctx.world_size, spec["batch"]
    model = _model(spec)
    parts = partition(model, k)
    stage = parts[ctx.rank]

    def loss_fn(out, y):
        return F.cross_entropy(out, y, reduction="sum") / batch

    runner = PipelineStageRunner(stage, ctx.rank, k, micro, schedule=sched, loss_fn=loss_fn)
    opt = torch.optim.SGD(stage.parameters(), lr=0.01)
    t0 = 0.0
    for i, (x, y) in enumerate(_batches(spec)):
        if i == 1:
            ctx.barrier()
            t0 = time.perf_counter()
        opt.zero_grad()
        runner.step(x if runner.is_first else None, y if runner.is_last else None)
        opt.step()
    ctx.barrier()
    elapsed = time.perf_counter() - t0
    bubbles = ctx.all_gather_object(runner.bubble())
    params = ctx.all_gather_object(runner.parameter_bytes())
    if ctx.is_main:
        Path(out_file).write_text(
            json.dumps(
                {
                    "samples_per_s": batch * (spec["steps"] - 1) / elapsed,
                    "bubble": sum(bubbles) / len(bubbles),
                    "max_stage_bytes": max(params),
                }
            )
        )


def main(quick: bool = False, docs: str | None = None) -> None:
    spec = QUICK if quick else SPEC
    k = spec["stages"]
    whole_bytes = count_parameters(_model(spec)) * 4
    base = _unsplit(spec)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for sched in ("gpipe", "1f1b"):
            for m in spec["micro"]:
                if sched == "1f1b" and m < k:
                    continue
                out = Path(tmp) / f"{sched}{m}.json"
                spawn_workers(
                    _stage_worker, k, (spec, sched, m, str(out)), options={"timeout_s": 120, "threads": 1}
                )
                r = json.loads(out.read_text())
                theory = theoretical_bubble(k, m)
                stash = max(simulate(schedule(sched, k, m)).peak_in_flight)
                rows.append(
                    [
                        sched,
                        m,
                        r["samples_per_s"],
                        r["samples_per_s"] / base,
                        r["bubble"],
                        theory,
                        100 * (r["bubble"] - theory),
                        f"{stash}/{m}",
                        r["max_stage_bytes"] / whole_bytes,
                    ]
                )
    table = markdown_table(
        [
            "schedule",
            "M",
            "samples/s",
            "vs unsplit",
            "bubble measured",
            "bubble theory",
            "diff (points)",
            "peak stashed micro-batches",
            "largest stage params / model",
        ],
        rows,
    )
    body = (
        "## pipeline: GPipe and 1F1B against theory and the unsplit model\n\n"
        f"`escala bench pipeline{' --quick' if quick else ''}`: MLP {spec['features']} -> "
        f"{len(spec['hidden'])}x{spec['hidden'][0]} -> 10 cut into {k} balanced stages (one process and one "
        f"thread each, gloo), batch {spec['batch']}, {spec['steps'] - 1} timed SGD steps; the unsplit model "
        f"in one process and one thread runs {base:,.0f} samples/s. {machine_line()}\n\n"
        f"{table}\n\n"
        "Bubble theory is (K - 1)/(M + K - 1); the measured bubble also contains the send/recv time and "
        "the per-micro-batch overhead, which grows with M as micro-batches shrink. 'peak stashed' is the most "
        "micro-batches whose activations one stage keeps at once (GPipe: M, 1F1B: at most K)."
    )
    print(body)
    update_section(docs, "pipeline", body)

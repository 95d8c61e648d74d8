"""``escala bench pipeline``: pipeline throughput and measured bubble against theory and the unsplit model.

A deep MLP of equal hidden layers is cut into K stages balanced by measured time (one process each,
gloo) and trained with GPipe and 1F1B for several micro-batch counts M, all in one run. Per
configuration we report samples/s, the measured bubble (mean over stages of their idle share of the
pipeline's step time, see :func:`escala.parallel.model.pipeline.engine.pipeline_bubble`) next to the
theory (K - 1)/(M + K - 1), and that idle time split into the schedule's share with the measured
stage times (fill/drain plus unequal stages, from a replay with free communication) and the rest
(sending/receiving activations and gradients, per-micro-batch engine work); also the peak number of
micro-batches whose activations a stage holds (from the schedule) and the parameter memory of the
largest stage against the whole model. The unsplit model trained in one process on the same batches
is the peer. The first step (shape inference) is excluded.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from escala.bench import pipeline_lstm
from escala.bench.report import machine_line, markdown_table, update_section
from escala.bench.workload import mlp, random_batches
from escala.models import count_parameters
from escala.parallel.model.pipeline import (
    PipelineStageRunner,
    balance,
    layer_time_costs,
    partition,
    pipeline_bubble,
    schedule,
    simulate,
    theoretical_bubble,
)
from escala.runtime import spawn_workers
from escala.runtime.dist import set_threads

# Micro-batches must stay big enough that compute, not the per-message cost of communication and of
# the engine, dominates: the full run keeps every micro-batch at >= 128 rows. The theory
# (K - 1)/(M + K - 1) assumes equal stage times, so the stages are cut by measured time and the layers
# made equal in time: the first layer computes no input gradient (2 matrix products of its size per
# pass instead of 3), so it gets 1.5x the hidden width as input, 1536 -> 1024, and costs what a
# 1024 -> 1024 layer does. (With 1024 inputs the best cut of 8 layers is 11:12 in time, which showed
# as +3.5 to +6 points of schedule idle time at M = 8-16.)
SPEC = {
    "features": 1536,
    "hidden": (1024,) * 8,
    "batch": 2048,
    "steps": 4,
    "micro": (1, 2, 4, 8, 16),
    "stages": 2,
}
QUICK = {"features": 1536, "hidden": (1024,) * 4, "batch": 256, "steps": 5, "micro": (1, 2, 4, 8), "stages": 2}


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
    data = _batches(spec)
    # Rank 0 times the layers on one micro-batch; every stage cuts where it measured.
    costs = ctx.broadcast_object(layer_time_costs(model, data[0][0][: batch // micro], repeats=5))
    starts = balance(costs, k)
    stage = partition(model, k, cuts=starts[1:])[ctx.rank]

    def loss_fn(out, y):
        return F.cross_entropy(out, y, reduction="sum") / batch

    runner = PipelineStageRunner(stage, ctx.rank, k, micro, schedule=sched, loss_fn=loss_fn)
    opt = torch.optim.SGD(stage.parameters(), lr=0.01)
    t0 = 0.0
    for i, (x, y) in enumerate(data):
        if i == 1:
            ctx.barrier()
            t0 = time.perf_counter()
        opt.zero_grad()
        runner.step(x if runner.is_first else None, y if runner.is_last else None)
        opt.step()
    ctx.barrier()
    elapsed = time.perf_counter() - t0
    stats = ctx.all_gather_object(runner.stats())
    params = ctx.all_gather_object(runner.parameter_bytes())
    if ctx.is_main:
        Path(out_file).write_text(
            json.dumps(
                {
                    "samples_per_s": batch * (spec["steps"] - 1) / elapsed,
                    **pipeline_bubble(stats, sched, micro),
                    "max_stage_bytes": max(params),
                    "cut": starts[1:],
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
                        spec["batch"] // m,
                        r["samples_per_s"],
                        r["samples_per_s"] / base,
                        r["bubble_measured"],
                        theory,
                        100 * (r["bubble_measured"] - theory),
                        r["bubble_schedule"],
                        r["bubble_overhead"],
                        f"{stash}/{m}",
                        ",".join(map(str, r["cut"])),
                        r["max_stage_bytes"] / whole_bytes,
                    ]
                )
        lstm = pipeline_lstm.run(quick, tmp)
    table = markdown_table(
        [
            "schedule",
            "M",
            "rows per micro-batch",
            "samples/s",
            "vs unsplit",
            "bubble measured",
            "bubble theory",
            "diff (points)",
            "schedule idle (measured stage times)",
            "communication + overhead",
            "peak stashed micro-batches",
            "stages start at layer",
            "largest stage params / model",
        ],
        rows,
    )
    body = (
        "## pipeline: GPipe and 1F1B against theory and the unsplit model\n\n"
        f"`escala bench pipeline{' --quick' if quick else ''}`: MLP {spec['features']} -> "
        f"{len(spec['hidden'])}x{spec['hidden'][0]} -> 10 cut into {k} stages balanced by measured time "
        f"(one process and one thread each, gloo), batch {spec['batch']}, "
        f"{spec['steps'] - 1} timed SGD steps; the unsplit model in one process and one thread runs "
        f"{base:,.0f} samples/s. {machine_line()}\n\n"
        f"{table}\n\n"
        "'bubble measured' is the mean over stages of the idle share of the pipeline's step time (a step "
        "lasts until its last stage finishes); theory is (K - 1)/(M + K - 1), GPipe's fill/drain idle time "
        "with equal stages and free communication. The measured idle time is split in two: 'schedule idle' "
        "replays the schedule with each stage's measured per-micro-batch forward and backward times and free "
        "communication (fill/drain plus the idle time of unequal stages); 'communication + overhead' is the "
        "rest: posting and waiting on the gloo sends and receives of activations and gradients and the "
        "engine's per-micro-batch work, which grow with M. 'peak stashed' is the most micro-batches whose "
        "activations one stage keeps at once (GPipe: M, 1F1B: at most K).\n\n"
        f"**Stacked LSTM pipelined over time steps** (`--model lstm --pipeline 2`, one layer per process): "
        f"{len(lstm['spec']['hidden'])} layers of {lstm['spec']['hidden'][0]} on {lstm['spec']['shape'][0]} "
        f"steps of {lstm['spec']['shape'][1]} features, batch {lstm['spec']['batch']}: "
        f"{lstm['samples_per_s']:,.0f} samples/s ({lstm['vs_unsplit']:.2f}x the unsplit nn.LSTM in one process), "
        f"bubble measured {lstm['bubble']:.3f} against (K - 1)/(T + K - 1) = {lstm['theory']:.3f} "
        f"({100 * (lstm['bubble'] - lstm['theory']):+.1f} points). Not split further: the idle time includes one "
        "blocking gloo message per time step and direction at the layer boundary, and the per-step autograd "
        "call of backpropagation through time."
    )
    print(body)
    update_section(docs, "pipeline", body)

"""``escala bench allreduce``: escala's synchronous training against a plain hand-written DDP loop.

Both sides train the same model on the same in-memory data with the same per-worker batch, optimizer
and thread count, for 1 and 2 workers, in one run. The plain loop is what a practitioner writes from
the PyTorch DDP tutorial, minus DataLoader overhead (it indexes tensors directly, as escala does), so
the ratio measures escala's own overhead: sharding, weighted loss, schedule, metrics. Throughput counts
training steps only (evaluation and process start-up are excluded on both sides). Runs alternate
between the two sides and the median of the repeats is reported.
"""

from __future__ import annotations

import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from escala.bench.report import machine_line, markdown_table, update_section
from escala.config import build_config
from escala.data import load_synthetic
from escala.models import build_model
from escala.runtime.dist import free_port, set_threads, shutdown

SPEC = {"samples": 16384, "shape": (1, 28, 28), "hidden": (512, 256), "batch": 64, "epochs": 2, "repeats": 5}
QUICK = {"samples": 4096, "shape": (1, 28, 28), "hidden": (256, 128), "batch": 64, "epochs": 1, "repeats": 1}


def _plain_train(rank: int, world: int, spec: dict, port: int, results) -> None:
    """The reference: a textbook DDP loop over tensors in memory."""
    set_threads(0, world)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    data = load_synthetic(spec["samples"], spec["shape"], seed=0)
    x, y = data.train.x, data.train.y
    torch.manual_seed(0)
    model = build_model("mlp", data.input_shape, data.num_classes, hidden=spec["hidden"])
    if world > 1:
        model = DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    train_time, seen = 0.0, 0
    for epoch in range(spec["epochs"]):
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        mine = perm[rank::world]
        steps = len(perm) // (spec["batch"] * world)
        t0 = time.perf_counter()
        for step in range(steps):
            idx = mine[step * spec["batch"] : (step + 1) * spec["batch"]]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(idx) * world
        train_time += time.perf_counter() - t0
    if rank == 0:
        results.put(seen / train_time)
    if world > 1:
        dist.barrier()
        shutdown()


def plain_samples_per_s(world: int, spec: dict) -> float:
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    if world == 1:
        _plain_train(0, 1, spec, 0, results)
    else:
        mp.start_processes(_plain_train, args=(world, spec, free_port(), results), nprocs=world, start_method="spawn")
    return results.get()


def escala_samples_per_s(world: int, spec: dict) -> float:
    from escala.train import run_training

    with tempfile.TemporaryDirectory() as out:
        config = build_config(None, {
            "dataset": "synthetic", "synthetic_samples": spec["samples"], "synthetic_shape": spec["shape"],
            "model": "mlp", "hidden": spec["hidden"], "batch_size": spec["batch"], "epochs": spec["epochs"],
            "lr": 0.01, "momentum": 0.9, "workers": world, "out": out, "progress": "none", "tensorboard": False,
            "checkpoint_every": spec["epochs"],
        })
        return run_training(config)["samples_per_s"]


def main(quick: bool = False, docs: str | None = None) -> None:
    spec = QUICK if quick else SPEC
    runs: dict[tuple[str, int], list[float]] = {}
    for _ in range(spec["repeats"]):
        for world in (1, 2):
            runs.setdefault(("plain", world), []).append(plain_samples_per_s(world, spec))
            runs.setdefault(("escala", world), []).append(escala_samples_per_s(world, spec))
    med = {k: statistics.median(v) for k, v in runs.items()}
    rows = []
    for world in (1, 2):
        rows.append([world, med[("plain", world)], med[("escala", world)], med[("escala", world)] / med[("plain", world)]])
    eff_plain = med[("plain", 2)] / (2 * med[("plain", 1)])
    eff_escala = med[("escala", 2)] / (2 * med[("escala", 1)])
    table = markdown_table(["workers", "plain DDP samples/s", "escala samples/s", "escala / plain"], rows)
    scaling = markdown_table(["", "plain DDP", "escala"], [["scaling efficiency 1 -> 2 workers", eff_plain, eff_escala]])
    body = (
        "## allreduce: escala vs a plain PyTorch DDP loop\n\n"
        f"`escala bench allreduce{' --quick' if quick else ''}`: MLP {spec['hidden']} on synthetic {spec['shape']} "
        f"data ({spec['samples']} samples), batch {spec['batch']} per worker, SGD momentum, {spec['epochs']} epochs, "
        f"median of {spec['repeats']} alternating runs. {machine_line()}\n\n"
        f"{table}\n\n{scaling}\n\n"
        "Aim: escala within 3% of the plain loop. On a 2-core machine the 2-worker run gives each worker one "
        "core, so scaling efficiency is bounded by how well one core does against two."
    )
    print(body)
    update_section(docs, "allreduce", body)

"""``escala bench tensor``: tensor-parallel MLP against the unsplit model and data parallelism.

The same wide MLP is trained on the same batches three ways, in one run: unsplit in one process
(one thread), tensor-parallel over T processes (DTensor Megatron pairs, every process sees the whole
batch), and data-parallel over the same T processes (DDP, each sees 1/T of the batch). We report
samples/s and the all-reduce payload per step: for tensor parallelism one (batch x width) activation
forward per Linear pair plus one input gradient backward for every pair after the first; for data
parallelism all the gradients. Payloads are computed from the shapes (a ring all-reduce sends about
2(T-1)/T of the payload per process); the number of forward all-reduces is counted with
``CommDebugMode`` to check the one-per-pair claim.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.distributed.tensor.debug import CommDebugMode
from torch.nn.parallel import DistributedDataParallel

from escala.bench.report import machine_line, markdown_table, update_section
from escala.bench.workload import mlp, random_batches
from escala.models import count_parameters
from escala.parallel.model.tensor import linear_pairs, local_parameter_count, tensor_parallel
from escala.runtime import spawn_workers
from escala.runtime.dist import set_threads

SPEC = {"features": 784, "hidden": (2048, 2048, 2048, 2048), "batch": 256, "steps": 8, "world": 2}
QUICK = {"features": 784, "hidden": (1024, 1024), "batch": 128, "steps": 5, "world": 2}


_model, _batches = mlp, random_batches


def _train(model, data, shard=None) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    t0 = 0.0
    for i, (x, y) in enumerate(data):
        if i == 1:
            t0 = time.perf_counter()
        if shard is not None:
            x, y = x[shard], y[shard]
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return time.perf_counter() - t0


def _worker(ctx, spec, mode, out_file):
    data = _batches(spec)
    model = _model(spec)
    extra = {}
    if mode == "tensor":
        tensor_parallel(model)
        with CommDebugMode() as comm:
            model(data[0][0])
        extra["forward_allreduces"] = sum(
            v for k, v in comm.get_comm_counts().items() if "all_reduce" in str(k)
        )
        extra["local_params"] = local_parameter_count(model)
        ctx.barrier()
        elapsed = _train(model, data)
    else:
        ddp = DistributedDataParallel(model)
        ctx.barrier()
        elapsed = _train(ddp, data, shard=slice(ctx.rank, None, ctx.world_size))
    ctx.barrier()
    if ctx.is_main:
        Path(out_file).write_text(
            json.dumps({"samples_per_s": spec["batch"] * (spec["steps"] - 1) / elapsed, **extra})
        )


def _payload_bytes(spec, t: int) -> tuple[int, int]:
    """All-reduce payload per step: (tensor parallel, data parallel), float32."""
    model = _model(spec)
    pairs, _ = linear_pairs(model)
    tp = 0
    for i, (col, row) in enumerate(pairs):
        tp += spec["batch"] * model.get_submodule(row).out_features  # g: forward sum of partial products
        if i > 0:
            tp += spec["batch"] * model.get_submodule(col).in_features  # f: backward sum of input grads
    return 4 * tp, 4 * count_parameters(model)


def main(quick: bool = False, docs: str | None = None) -> None:
    spec = QUICK if quick else SPEC
    t = spec["world"]
    set_threads(1, 1)
    base = spec["batch"] * (spec["steps"] - 1) / _train(_model(spec), _batches(spec))
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("tensor", "data"):
            out = Path(tmp) / f"{mode}.json"
            spawn_workers(_worker, t, (spec, mode, str(out)), options={"timeout_s": 120, "threads": 1})
            res[mode] = json.loads(out.read_text())
    tp_bytes, dp_bytes = _payload_bytes(spec, t)
    whole = count_parameters(_model(spec))
    pairs = len(linear_pairs(_model(spec))[0])
    rows = [
        ["unsplit (1 process)", base, 1.0, 0, whole],
        [
            f"tensor parallel (T={t})",
            res["tensor"]["samples_per_s"],
            res["tensor"]["samples_per_s"] / base,
            tp_bytes,
            res["tensor"]["local_params"],
        ],
        [
            f"data parallel DDP ({t} processes)",
            res["data"]["samples_per_s"],
            res["data"]["samples_per_s"] / base,
            dp_bytes,
            whole,
        ],
    ]
    table = markdown_table(
        ["run", "samples/s", "vs unsplit", "all-reduce payload bytes/step", "params per process"], rows
    )
    body = (
        "## tensor: Megatron-style tensor parallel MLP against the unsplit model and DDP\n\n"
        f"`escala bench tensor{' --quick' if quick else ''}`: MLP {spec['features']} -> "
        f"{' -> '.join(map(str, spec['hidden']))} -> 10, global batch {spec['batch']}, {spec['steps'] - 1} timed "
        f"SGD steps, one thread per process, gloo. {machine_line()}\n\n{table}\n\n"
        f"Forward all-reduces counted per step: {res['tensor']['forward_allreduces']} for {pairs} Linear pairs. "
        "Tensor parallelism moves activations (grows with the batch), data parallelism moves gradients (grows "
        "with the model): the former wins when batch x width is small against the weight count."
    )
    print(body)
    update_section(docs, "tensor", body)

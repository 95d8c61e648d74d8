"""The stacked LSTM pipelined over time steps, for ``escala bench pipeline``.

The zoo's lstm model on MNIST-shaped sequences (28 steps of 28 features) with one LSTM layer per
process (:class:`escala.parallel.model.recurrent.PipelinedLSTM`): layer 2 works on step t-1 while
layer 1 works on step t, so the T time steps play the part of micro-batches and the fill/drain idle
fraction is (K - 1)/(T + K - 1) each way. Measured as for the layer pipeline: every step starts at a
barrier and lasts until the last process finishes; a process's compute is its cells' forward and
backward (and the classifier and loss on the last one). The peer is the unsplit model in one process
(``nn.LSTM``'s fused kernel). First step excluded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from escala.models.lstm import LSTMClassifier, LSTMLayer
from escala.parallel.model.pipeline.schedule import theoretical_bubble
from escala.parallel.model.recurrent import PipelinedLSTM, lstm_cell
from escala.runtime import spawn_workers
from escala.runtime.dist import set_threads

SPEC = {"shape": (28, 28), "hidden": (512, 512), "batch": 256, "steps": 5}
QUICK = {"shape": (28, 28), "hidden": (256, 256), "batch": 128, "steps": 4}


def _model(spec) -> LSTMClassifier:
    torch.manual_seed(0)
    return LSTMClassifier(spec["shape"], 10, hidden=spec["hidden"])


def _batches(spec):
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(spec["batch"], *spec["shape"], generator=g), torch.randint(0, 10, (spec["batch"],), generator=g))
        for _ in range(spec["steps"])
    ]


def _unsplit(spec) -> float:
    set_threads(1, 1)
    model, data = _model(spec), _batches(spec)
    t0 = 0.0
    for i, (x, y) in enumerate(data):
        if i == 1:
            t0 = time.perf_counter()
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
    return spec["batch"] * (len(data) - 1) / (time.perf_counter() - t0)


def _worker(ctx, spec, out_file):
    model = _model(spec)
    layers = [m for m in model.children() if isinstance(m, LSTMLayer)]
    per = len(layers) // ctx.world_size
    stack = PipelinedLSTM(cells=[lstm_cell(m, 0) for m in layers[ctx.rank * per : (ctx.rank + 1) * per]])
    walls, busy, t_run = [], 0.0, 0.0
    for i, (x, y) in enumerate(_batches(spec)):
        model.zero_grad()
        ctx.barrier()
        stack.busy_s = 0.0
        t0 = time.perf_counter()
        if stack.first:
            top = stack.forward(model.rows(x))
        else:
            top = stack.forward(None, batch=x.shape[0], steps=model.steps)
        if stack.last:
            c0 = time.perf_counter()
            F.cross_entropy(model.fc(model.last(top)), y).backward()
            stack.busy_s += time.perf_counter() - c0
            stack.backward(top.grad)
        else:
            stack.backward()
        if i > 0:
            walls.append(time.perf_counter() - t0)
            busy += stack.busy_s
            t_run += walls[-1]
    stats = ctx.all_gather_object((walls, busy))
    if ctx.is_main:
        total = sum(max(w[i] for w, _ in stats) for i in range(len(walls)))
        bubbles = [1.0 - b / total for _, b in stats]
        Path(out_file).write_text(
            json.dumps({"bubble": sum(bubbles) / len(bubbles), "samples_per_s": spec["batch"] * len(walls) / total})
        )


def run(quick: bool, tmp: str) -> dict:
    """One measurement with 2 processes: samples/s, against the unsplit model, bubble and its theory."""
    spec = QUICK if quick else SPEC
    base = _unsplit(spec)
    out = Path(tmp) / "lstm.json"
    spawn_workers(_worker, 2, (spec, str(out)), options={"timeout_s": 120, "threads": 1})
    r = json.loads(out.read_text())
    return {
        "spec": spec,
        "samples_per_s": r["samples_per_s"],
        "vs_unsplit": r["samples_per_s"] / base,
        "bubble": r["bubble"],
        "theory": theoretical_bubble(2, spec["shape"][0]),
    }

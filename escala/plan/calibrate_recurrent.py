"""Calibrate a recurrent (time-step) pipeline's compute as escala's engine runs it.

``escala train --model lstm --pipeline K`` does not run the fused ``nn.LSTM``: its engine
(:class:`escala.parallel.model.recurrent.PipelinedLSTM`) steps ``nn.LSTMCell`` s one time step at a
time and differentiates each step alone (so a step can be handed to the next process as soon as it is
done), which costs more than the fused layer's step on the same batch: per-step autograd graphs, one
``torch.autograd.backward`` per step, and the states entering each step as leaves. Timing the fused
model and dividing by ``T`` under-predicts that work (a probe, 2 x 256 LSTM on 28 x 28 rows, batch
56: fused 45-57 ms per step, the engine's two stages busy ~110 ms between them).

``recurrent_step_seconds`` times the engine itself on the whole stack of layers, in ``busy`` processes
at once (each on its own one-process group, so there are no messages; a 4-byte all-reduce of the world
after each step keeps them in lockstep, its cost timed alone and subtracted): the rows reshape, every
time step of every layer forward, the classifier and loss on the last step, backpropagation through
time step by step, and the SGD update. A stage's share of it goes by FLOPs
(:func:`escala.plan.modelparallel.pipeline_cost`). Synthetic data; processes have a timeout.
"""

from __future__ import annotations

import torch

from escala.plan.calibrate import _CACHE, _profile_args, join_group, run_calibration
from escala.runtime.dist import shutdown


def _engine_step(args, batch: int, group):
    """One training step of the lstm zoo model through escala's time-step engine on ``group``."""
    from torch.nn import functional as F

    from escala.models import build_model
    from escala.parallel.model.recurrent import PipelinedLSTM, lstm_cell
    from escala.plan.calibrate import make_optimizer

    name, shape, classes, hidden, optimizer = args
    torch.manual_seed(0)
    model = build_model(name, shape, classes, hidden=hidden)
    layers = [m for m in model.children() if isinstance(m, torch.nn.RNNBase)]
    engine = PipelinedLSTM(cells=[lstm_cell(layer, 0) for layer in layers], group=group)
    head = [m for m in model.children() if not isinstance(m, torch.nn.RNNBase)]
    rows, tail = head[0], head[1:]  # (rows) before the layers, (last step, classifier) after
    opt = make_optimizer(model.parameters(), optimizer)
    x = torch.randn(batch, *shape)
    y = torch.randint(0, classes, (batch,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out = engine.forward(rows(x))
        logits = out
        for module in tail:
            logits = module(logits)
        F.cross_entropy(logits, y).backward()
        engine.backward(out.grad)
        opt.step()

    return step


def _worker(rank, store_path, processes, args, batch, n_threads, count, rounds, out) -> None:
    from escala.plan.calibrate import lockstep_seconds

    dist = join_group(rank, store_path, processes, n_threads)
    try:
        groups = [dist.new_group([r]) for r in range(processes)]  # every process creates every group
        step = _engine_step(args, batch, groups[rank])

        seconds = lockstep_seconds(step, count, rounds)
        if rank == 0:
            out.put(seconds)
        dist.barrier()
    finally:
        shutdown()


def recurrent_step_seconds(
    profile,
    batch: int,
    n_threads: int = 1,
    busy: int = 1,
    count: int = 5,
    rounds: int = 2,
    timeout_s: float = 180.0,
) -> float:
    """Mean seconds of one training step of ``profile``'s recurrent model through escala's time-step
    engine (all layers in one process), with ``busy`` processes doing the same at once in lockstep."""
    args = _profile_args(profile)
    processes = max(1, busy)
    key = ("recurrent-step", args, int(batch), n_threads, processes)
    if key not in _CACHE:
        rest = (processes, args, int(batch), n_threads, count, rounds)
        what = f"the recurrent engine's step in {processes} process(es)"
        _CACHE[key] = run_calibration(_worker, processes, rest, timeout_s, what)
    return _CACHE[key]

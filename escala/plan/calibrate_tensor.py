"""Calibrations of tensor parallelism (Megatron-style Linear pairs on DTensor) on the machine at hand.

Two numbers, each timed in ``T`` local processes at once and in lockstep, as ``escala train --tensor
T`` runs its shards:

* ``tensor_shard_step_seconds``: the training step of *one shard's* model, as escala's engine holds it.
  Every Linear pair (column layer, row layer) is rebuilt at its shard's shapes (the column layer keeps
  ``out / T`` outputs, the row layer ``in / T`` inputs; unpaired layers stay whole) and sharded with
  escala's own :func:`escala.parallel.model.tensor.tensor_parallel` over a *one-process* device mesh,
  so the step runs the same DTensor dispatch, redistributions and optimizer over DTensor parameters at
  the same local shapes, with the communication left out (a one-rank all-reduce is a local copy); the
  cost model adds the all-reduces. Half of the whole model's step is not the same number here: a
  shard's narrower matmuls run below the rate of the whole ones, and DTensor's per-operation work
  grows with the tensors it wraps (measured: ~32 ms in lockstep against ~29 ms for half the step).
  Each step ends with a 4-byte all-reduce of the world (the lockstep barrier), timed alone right after
  and subtracted.

* ``tensor_allreduce_factor``: tensor parallelism's activation all-reduce as escala's engine issues
  it: a column/row pair of the message's width runs forward and backward sharded over the ``T``
  processes and, in the same rounds, at one shard's shapes on a one-process mesh; the difference per
  all-reduce over the same all-reduce back to back. DTensor's all-reduces are functional (a new
  output buffer each), sit on autograd's redistribute path and follow the shard's compute: on this
  machine 1.2-1.8x a tight loop of in-place all-reduces (the earlier microbenchmark, a plain matmul
  then an in-place all-reduce, gave 0.7-1.4 and left the tensor row 20% short).

Both on synthetic tensors (never a training run of the model being predicted); processes have a
timeout and are killed past it.
"""

from __future__ import annotations

import torch

from escala.plan.calibrate import _CACHE, _profile_args, join_group, run_calibration
from escala.runtime.dist import shutdown


def shard_model(name, shape, classes, hidden, shards: int) -> torch.nn.Module:
    """The model one of ``shards`` tensor-parallel ranks computes: each Linear pair at its shard's
    shapes (column layer ``in -> out / T``, row layer ``in / T -> out``), everything else whole.

    A shard is at least 2 units wide: on a one-process mesh DTensor cannot reshape a sharded dimension
    of one unit (only the planner's empty model, 2 units per layer, is that narrow).
    """
    from escala.models import build_model

    torch.manual_seed(0)
    return shrink_pairs(build_model(name, shape, classes, hidden=hidden), shards)


def shrink_pairs(model: torch.nn.Module, shards: int) -> torch.nn.Module:
    """``model`` with each Linear pair rebuilt at one shard's shapes (see :func:`shard_model`)."""
    from torch import nn

    from escala.parallel.model.tensor import linear_pairs

    pairs, _ = linear_pairs(model)
    for col, row in pairs:
        c, r = model.get_submodule(col), model.get_submodule(row)
        setattr(model, col, nn.Linear(c.in_features, max(2, c.out_features // shards)))
        setattr(model, row, nn.Linear(max(2, r.in_features // shards), r.out_features))
    return model


def _shard_step_worker(
    rank, store_path, processes, shards, args, batch, n_threads, count, rounds, out
) -> None:
    from torch.distributed.device_mesh import DeviceMesh

    from escala.parallel.model.tensor import tensor_parallel
    from escala.plan.calibrate import lockstep_seconds, make_optimizer

    dist = join_group(rank, store_path, processes, n_threads)
    try:
        name, shape, classes, hidden, optimizer = args
        # One single-rank group per process (every process must create every group, in the same order).
        groups = [dist.new_group([r]) for r in range(processes)]
        mesh = DeviceMesh.from_group(groups[rank], "cpu")
        model = tensor_parallel(shard_model(name, shape, classes, hidden, shards), mesh)
        opt = make_optimizer(model.parameters(), optimizer)
        x = torch.randn(batch, *shape)
        y = torch.randint(0, classes, (batch,))
        def step() -> None:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        seconds = lockstep_seconds(step, count, rounds)
        if rank == 0:
            out.put(seconds)
        dist.barrier()
    finally:
        shutdown()


def tensor_shard_step_seconds(
    profile,
    batch: int,
    shards: int,
    n_threads: int = 1,
    busy: int = 0,
    seconds: float = 1.0,
    timeout_s: float = 120.0,
) -> float:
    """Mean seconds of one of ``shards`` shards' training step (forward, backward, update; no
    communication) when ``max(busy, shards)`` processes each run one in lockstep (see the module
    docstring; ``busy`` > ``shards`` for tensor x data parallelism on one machine)."""
    from escala.plan.calibrate import model_step_seconds

    args = _profile_args(profile)
    processes = max(busy, shards)
    key = ("tp-shard", args, int(batch), shards, n_threads, processes)
    if key not in _CACHE:
        # Enough steps for ~`seconds` of timing, from the whole model's step (a shard's is shorter).
        whole = model_step_seconds(profile, batch, n_threads)
        rounds = 3
        count = max(5, min(500, int(seconds / max(whole / shards, 1e-5) / rounds)))
        rest = (processes, shards, args, int(batch), n_threads, count, rounds)
        what = f"a tensor-parallel shard's step in {processes} processes"
        _CACHE[key] = run_calibration(_shard_step_worker, processes, rest, timeout_s, what)
    return _CACHE[key]


def _pair(width: int) -> torch.nn.Module:
    """A column/row Linear pair of ``width`` behind a replicated Linear and a LayerNorm (which ends
    any pairing), so the pair's input needs a gradient: both of its all-reduces happen."""
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(width, width),
        nn.LayerNorm(width),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, width),
    )


def _pair_worker(rank, store_path, processes, batch, width, n_threads, count, rounds, out) -> None:
    from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

    from escala.parallel.model.tensor import tensor_parallel
    from escala.plan.calibrate import _fixed_count_mean

    dist = join_group(rank, store_path, processes, n_threads)
    try:
        groups = [dist.new_group([r]) for r in range(processes)]
        split = tensor_parallel(_pair(width), init_device_mesh("cpu", (processes,)))
        alone = tensor_parallel(
            shrink_pairs(_pair(width), processes), DeviceMesh.from_group(groups[rank], "cpu")
        )
        x = torch.randn(batch, width, generator=torch.Generator().manual_seed(0))
        y = torch.empty(batch, width)
        flag = torch.zeros(1)

        def lockstep(model):
            def run() -> None:  # forward and backward, then a 4-byte barrier
                for p in model.parameters():
                    p.grad = None
                model(x).sum().backward()
                dist.all_reduce(flag)

            return run

        # Interleaved rounds, so a slow spell of the machine falls on all three means alike.
        fns = (lockstep(split), lockstep(alone), lambda: dist.all_reduce(y))
        sums = [0.0] * len(fns)
        for _ in range(rounds):
            for i, fn in enumerate(fns):
                sums[i] += _fixed_count_mean(fn, count)
        with_comm, without, back_to_back = (t / rounds for t in sums)
        if rank == 0:
            out.put(max(with_comm - without, 0.0) / (2 * max(back_to_back, 1e-9)))
        dist.barrier()
    finally:
        shutdown()


def tensor_allreduce_factor(
    message_bytes: float,
    batch: int,
    shards: int = 2,
    n_threads: int = 1,
    count: int = 20,
    rounds: int = 3,
    timeout_s: float = 120.0,
) -> float:
    """How many times its back-to-back time a tensor-parallel activation all-reduce costs when escala's
    engine (DTensor) issues it inside a training step: a column/row Linear pair of ``d =
    message_bytes / 4`` features (behind a replicated layer, so both its forward output and its input
    gradient are all-reduced) runs forward and backward on ``b = batch`` samples over ``shards``
    processes, in lockstep, against the same pair at one shard's shapes on a one-process mesh (the
    same compute and DTensor work without communication). Factor = ``(t(split) - t(one shard)) /
    (2 t(all-reduce of b x d floats, back to back))``; synthetic tensors. 1 for one shard.

    DTensor's all-reduces are functional (out of place, a new buffer each) and run on the redistribute
    path of autograd, and they follow the shard's compute: on this machine they cost 1.5-2x a tight
    loop of in-place all-reduces of the same bytes."""
    if shards <= 1 or message_bytes <= 0:
        return 1.0
    width = max(2 * shards, int(message_bytes // 4))
    width -= width % shards
    key = ("tp-post", width, int(batch), shards, n_threads, count, rounds)
    if key in _CACHE:
        return _CACHE[key]
    args = (shards, int(batch), width, n_threads, count, rounds)
    what = f"the tensor-parallel all-reduce in {shards} processes"
    _CACHE[key] = run_calibration(_pair_worker, shards, args, timeout_s, what)
    return _CACHE[key]

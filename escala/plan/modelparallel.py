"""Model-parallel strategies and their combination with data parallelism: pipeline (K stages) x data (D
replicas), tensor (T shards) x data (D replicas); ``N = K D`` or ``N = T D`` devices.

**Pipeline** (Huang et al., "GPipe", NeurIPS 2019; 1F1B of Narayanan et al., "PipeDream", SOSP 2019).
The top-level layers are cut into ``K`` contiguous stages balancing their FLOPs (the exact partition of
:func:`escala.parallel.model.pipeline.partition.balance`). A replica batch of ``b`` samples is split
into ``M`` micro-batches; stage ``k`` takes ``t_k = c(b / M) * f_k`` per micro-batch (``f_k`` its FLOP
share). All stages advance at the pace of the slowest one::

    step     = M * max_k t_k + (K - 1) * t'_max + sends + data-parallel all-reduce
    compute  = M * mean_k t_k                                (useful work per device)
    bubble   = (K - 1) * t'_max  +  M * (max t - mean t)     (fill/drain + stage imbalance)

where ``t'`` is a stage's time with the other stages idle (fill and drain run one stage at a time: on
a measured machine it has the shared cores and memory bandwidth to itself; elsewhere ``t' = t``)

so with equal stages and free sends the idle fraction is ``(K - 1) / (M + K - 1)``. Activation sends
on the critical path: one forward and one backward send per stage boundary during fill and drain, plus
any excess of a send over ``max t`` in the steady state. Each stage's gradients are all-reduced over
the ``D`` replicas after the flush (not overlapped: conservative). Memory of stage ``k`` with 1F1B:
its parameters, gradients and optimizer state plus ``min(M, K - k)`` micro-batches of its activations.

A recurrent model (the zoo's lstm) is pipelined over time steps instead
(:mod:`escala.parallel.model.strategies.recurrent`): at most one stage per recurrent layer, the ``T``
time steps of the whole batch play the micro-batches (``M = T``, ``b / M`` samples' worth of work and
one ``h_t`` of the batch sent per step), and backpropagation through time keeps every step's
activations of the whole batch on its stage.

**Tensor** (Shoeybi et al., "Megatron-LM", 2019): every weight layer is split ``T`` ways, paired
column-then-row so one all-reduce of a layer's output (forward) or input gradient (backward) per layer
keeps the shards consistent::

    step = c(b) (s / T + 1 - s) + sum_m f_m allreduce_T(bytes_m * b) + data-parallel all-reduce of P / T

with ``s`` the FLOP share of the split layers; on a measured device the first term is the shard's own
step, timed as escala's engine runs it (DTensor at the shard's shapes, in lockstep:
:func:`escala.plan.calibrate_tensor.tensor_shard_step_seconds`), since a shard's narrower matmuls and
DTensor's per-operation work make it longer than ``1/T`` of the model's step. escala's engine pairs Linear layers (column, row) and
all-reduces each pair's output forward and its input gradient backward (none for a first layer, whose
input needs no gradient), so the messages are those (:func:`escala.plan.profile.tensor_messages`); for a
model it cannot split, one all-reduce per weight layer of its output. ``f_m``: how many times its
back-to-back time message ``m``'s all-reduce costs when issued right after the shard's matmul, as the
engine issues it (calibrated on a measured machine,
:func:`escala.plan.calibrate_tensor.tensor_allreduce_factor`; 1 elsewhere).

Memory: ``1/T`` of the model state and of the split activations; the all-reduced layer outputs stay
whole on every shard (counted as half the saved activations: an approximation).
"""

from __future__ import annotations

import math

from escala.errors import UserError
from escala.parallel.model.pipeline.partition import balance
from escala.plan.collectives import allreduce, group_allreduce, p2p
from escala.plan.dataparallel import gradient_comm
from escala.plan.step import Setting, StepCost


def stage_plan(s: Setting, stages: int) -> list[list[int]]:
    """Child indices of each stage (FLOP-balanced), or a UserError when the model has too few layers."""
    flops = [max(c.flops, 1e-9) for c in s.profile.children]
    starts = balance(flops, stages)
    ends = [*starts[1:], len(flops)]
    return [list(range(a, b)) for a, b in zip(starts, ends)]


def microbatch_count(s: Setting, stages: int, replica_batch: float) -> int:
    if s.profile.time_steps:  # a recurrent pipeline: the whole batch, one time step at a time
        return s.profile.time_steps
    m = s.microbatches or 4 * stages
    return max(1, min(m, int(replica_batch)))


def pipeline_cost(s: Setting, stages: int, replicas: int = 1) -> StepCost:
    c = s.cluster
    devices = stages * replicas
    b = s.replica_batch(replicas)
    m = microbatch_count(s, stages, b)
    mb = b / m
    plan = stage_plan(s, stages)
    total_flops = sum(ch.flops for ch in s.profile.children) or 1.0
    share = [sum(s.profile.children[i].flops for i in st) / total_flops for st in plan]
    recurrent = bool(s.profile.time_steps)
    if recurrent:
        # A micro-batch is one time step of the whole batch: 1/T of the batch's step as the engine runs
        # it (cell by cell; a step of b/T samples over all T steps would be far slower per sample).
        t = [s.recurrent_compute(b, devices) * f / m for f in share]
        t_alone = s.recurrent_compute(b, 1) * max(share) / m
    else:
        t = [s.compute(mb, devices=devices) * f for f in share]  # steady state: every stage busy
        # Fill and drain: one stage works while the others wait, so it has the device's resources
        # alone (on a measured machine its neighbours' cores and memory bandwidth are free).
        t_alone = s.compute(mb, devices=1) * max(share)
    t_max, t_mean = max(t), sum(t) / stages
    link = c.intra if stages <= c.devices_per_node else c.inter
    sends = [p2p(s.profile.children[st[-1]].out_bytes * mb, link) for st in plan[:-1]]
    comm = 2 * sum(sends) + m * max([0.0, *(x - t_max for x in sends)])
    params = [sum(s.profile.children[i].params for i in st) for st in plan]
    if replicas > 1:
        comm += max(group_allreduce(4.0 * p, replicas, c, stride=stages) for p in params)
    # 1F1B keeps min(M, K - k) micro-batches of activations; backpropagation through time keeps every
    # step of the whole batch.
    acts = s.profile.child_activation_bytes(max(1, math.ceil(b if recurrent else mb)))
    mem = [
        s.profile.state_bytes(params[k]) + (1 if recurrent else min(m, stages - k)) * sum(acts[i] for i in st)
        for k, st in enumerate(plan)
    ]
    worst = max(range(stages), key=lambda k: mem[k])
    names = [s.profile.children[st[0]].name for st in plan]
    return StepCost(
        "pipeline" if replicas == 1 else "pipeline x data",
        devices,
        m * t_mean,
        comm,
        b * replicas,
        mem[worst],
        bubble=(stages - 1) * t_alone + m * (t_max - t_mean),
        wait=s.straggler_wait(m * t_mean, devices) if devices > 1 else 0.0,
        layout={"pipeline": stages, "data": replicas, "microbatches": m},
        comm_total=comm,
        memory_detail={"state": s.profile.state_bytes(params[worst]), "stage": worst},
        note=f"K={stages} stages starting at {','.join(names)}; "
        + (f"wavefront over T={m} time steps" if recurrent else f"M={m} micro-batches, 1F1B"),
    )


def tensor_cost(s: Setting, shards: int, replicas: int = 1) -> StepCost:
    c = s.cluster
    devices = shards * replicas
    b = s.replica_batch(replicas)
    compute = s.tensor_compute(b, shards, devices)
    link = c.intra if shards <= c.devices_per_node else c.inter
    messages = s.profile.tp_messages
    layers = len(messages) if messages else max(1, s.profile.tp_layers)
    comm = 0.0
    if shards > 1 and messages:  # escala's Linear pairs: the all-reduces the engine makes
        # Each issued right after its shard's matmul: slower than back to back on a measured machine.
        comm = sum(
            allreduce(m * b, shards, link, "ring") * s.tensor_allreduce_factor(m, b, shards) for m in messages
        )
    elif shards > 1:
        # One all-reduce per weight layer; their sizes differ, the ring's bandwidth term only sees the sum.
        act = s.profile.tp_bytes_per_sample * b
        comm = allreduce(act, shards, link, "ring") + (layers - 1) * 2 * (shards - 1) * link.latency
    dp_exposed = 0.0
    if replicas > 1:
        dp_exposed, _ = gradient_comm(s, replicas, compute, params_share=1 / shards, stride=shards)
    est = s.profile.memory(max(1, math.ceil(b)))
    acts = est.activation_bytes * (1 + 1 / shards) / 2
    memory = s.profile.state_bytes(s.profile.params / shards) + acts + est.largest_output_bytes
    return StepCost(
        "tensor" if replicas == 1 else "tensor x data",
        devices,
        compute,
        comm + dp_exposed,
        b * replicas,
        memory,
        wait=s.straggler_wait(compute, devices) if devices > 1 else 0.0,
        layout={"tensor": shards, "data": replicas},
        comm_total=comm + dp_exposed,
        memory_detail={"state": s.profile.state_bytes(s.profile.params / shards), "activations": acts},
        note=f"T={shards}: {layers} activation all-reduces per step",
    )


def split_fits_model(s: Setting, stages: int) -> str | None:
    """Why ``stages`` pipeline stages cannot be cut from the model, or None."""
    n = len(s.profile.children)
    recurrent = s.profile.recurrent_layers
    if recurrent and stages > len(recurrent):
        return f"{s.profile.name} has {len(recurrent)} recurrent layers, fewer than {stages} stages"
    if stages > n:
        return f"{s.profile.name} has {n} top-level layers, fewer than {stages} stages"
    try:
        stage_plan(s, stages)
    except UserError as err:
        return str(err)
    return None

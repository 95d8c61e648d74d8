"""Parameter servers (Dean et al., "Large Scale Distributed Deep Networks", NIPS 2012): the bytes that
go through each server, and where adding workers stops helping.

``W`` workers push gradients to and pull parameters from ``S`` servers, each holding ``1/S`` of the
``P`` parameter bytes (``P`` times the codec ratio: 16-bit transfers halve it). Workers may first
aggregate inside their node (``aggregate = node``: one push per node of ``g`` devices, as Goyal et al.
and the Poseidon/Project Adam systems do), so ``W / g`` senders reach the servers. Per direction::

    server card   (dedicated):  a + (W / g) * P / S / B_server
    worker card:                a + (g_node / g) * P / B_inter       (g_node devices share a card)
    host card     (colocated):  a + ((W / g) * P / min(S, nodes) + (g_node / g) * P) / B_inter

and a synchronous step is ``c(b) + 2 * max(cards) + local aggregation + wait``. Under strong scaling
(fixed global batch ``B``) the compute ``c(B / W)`` shrinks like ``1 / W`` while the server term grows
like ``W / (g S)``, so the step is smallest near ``W* = sqrt(c(B) g S B_server / P)``: past it adding
workers slows training. Sharding (``S``), fewer senders (``g``) and 16-bit transfers (``P / 2``) each
move this knee out, by ``sqrt(S)``, ``sqrt(g)`` and ``sqrt(2)``. Under weak scaling throughput
saturates at ``g S B_server b / P`` samples per second instead.

**Staleness.** The step time above is that of a synchronous push/pull. Run asynchronously (Downpour
SGD, escala's ``--strategy paramserver``), no worker waits for the others (the straggler wait goes)
but each gradient is applied after, on average, the other ``W - 1`` workers' pushes of the same round:
an expected staleness ``tau = W - 1`` (``staleness`` of the row). It costs convergence per step, not
time per step (Zhang et al., "Staleness-aware Async-SGD", IJCAI 2016, divide the learning rate by
``tau + 1``, as escala does by default), so the table reports it beside the throughput.

On a one-node cluster all traffic stays inside the node: point-to-point messages over the ``[intra]``
link (its ``p2p_*`` figures; a header then the payload, as escala's transport sends them); on a
measured machine, half a round trip through escala's transport timed here for the message size
(:func:`escala.plan.calibrate_comm.transport_link`). Each server
applies the pushes one after another, an optimizer step over ``P / S`` bound by memory bandwidth
(:func:`update_seconds`), and the engine copies the model a few times per step to pack and unpack its
messages (:data:`PS_COPIES`, :data:`BACKUP_COPIES`; :func:`pack_seconds`). Push, update and reply are
issued right after the worker's step, which on a measured machine makes them slower than back to back
by a calibrated factor (:func:`escala.plan.calibrate_comm.exchange_after_step_factor`; the backup
chief's exchange is counted with the same factor, though its chief computes too).
"""

from __future__ import annotations

import math

from escala.plan.collectives import allreduce, ring_allgather
from escala.plan.compression import wire_ratio
from escala.plan.step import Setting, StepCost

HEADER_BYTES = 64  # a message's header (escala's transport: 8 int64 fields, sent before the payload)
# Whole-model copies a step makes in escala's engines (counted in their code), on the critical path:
# a parameter-server worker flattens its gradients (cat), takes their mean over the pushes (a new
# tensor), flattens its parameters and clones them, and writes the received shard into them;
PS_COPIES = 5
# backup workers: a worker flattens its gradient; the chief clones its own, adds the others, divides,
# hands the mean back to the layers (a clone per layer) and flattens the new parameters for the reply.
BACKUP_COPIES = 6


def server_traffic(
    s: Setting,
    workers: int,
    *,
    servers: int | None = None,
    aggregate: str = "device",
    codec: str = "none",
    placement: str | None = None,
    copies: int = PS_COPIES,
    chief_busy: bool = False,
) -> tuple[float, str]:
    """(seconds of push + pull per step, a short description); ``copies``: whole-model copies on the
    critical path of a step (:func:`pack_seconds`); ``chief_busy``: the server is a backup chief that
    computes its own step while pushes arrive (calibrated that way on a measured machine)."""
    c = s.cluster
    servers = servers or c.ps_servers
    placement = placement or c.ps_placement
    ratio = wire_ratio(codec) if codec in ("fp16", "bf16") else 1.0
    pbytes = s.profile.param_bytes * ratio
    g = min(workers, c.devices_per_node) if aggregate == "node" else 1
    senders = math.ceil(workers / g)
    per_card = max(1, min(workers, c.devices_per_node) // g)  # senders sharing one network card
    local = 0.0
    if g > 1:  # reduce inside the node before the push, broadcast after the pull
        local = allreduce(pbytes, g, c.intra, "ring") + ring_allgather(pbytes, g, c.intra)
    if c.nodes == 1 and c.device.measured:  # escala's transport timed here: header + payload
        from escala.plan.calibrate_comm import transport_link

        link = transport_link(c.intra)
        one_way = max(
            link.message(senders * pbytes / servers) + (senders - 1) * link.message(0),
            link.message(pbytes),
        )
    elif c.nodes == 1:  # point-to-point messages over the node's link: a header, then the payload
        link = c.intra
        one_way = link.message(HEADER_BYTES) + max(
            link.message(senders * pbytes / servers) + (senders - 1) * link.message(HEADER_BYTES),
            link.message(pbytes),
        )
    elif placement == "dedicated":
        server = c.server_link.time(senders * pbytes / servers)
        worker = c.inter.time(per_card * pbytes)
        one_way = max(server, worker)
    else:
        hosts = min(servers, c.nodes)
        one_way = c.inter.time(senders * pbytes / hosts + per_card * pbytes)
    where = "in the node" if c.nodes == 1 else placement
    desc = f"S={servers} {where} server(s), {senders} sender(s)" + (f" of {g} devices" if g > 1 else "")
    if codec != "none":
        desc += f", {codec} transfers"
    # The server applies the senders' pushes one after another; each worker packs its gradient into
    # one message and unpacks the parameters it gets back.
    update = senders * update_seconds(s, s.profile.params / servers)
    # On a measured machine the exchange comes right after the worker's step: slower than back to back.
    after = s.exchange_factor(s.replica_batch(workers), chief_busy) if c.nodes == 1 else 1.0
    return (2 * one_way + update) * after + local + pack_seconds(s, s.profile.params, copies), desc


def update_seconds(s: Setting, params: float) -> float:
    """An optimizer step over ``params`` parameters, bound by memory: it reads the parameters, the
    gradient and each of the optimizer's ``slots`` state tensors and writes back the parameters and the
    slots, ``(3 + 2 slots) x 4`` bytes per parameter (SGD with momentum: 5 passes)."""
    return 4.0 * params * (3 + 2 * s.profile.slots) / s.cluster.device.memory_bandwidth


def pack_seconds(s: Setting, params: float, copies: int = PS_COPIES) -> float:
    """``copies`` copies of the ``4 params`` bytes of the model into fresh buffers: each reads and
    writes them at the device's memory bandwidth or, on a measured device, costs what cloning a tensor
    of that size costs here (allocation and first-touch page faults included:
    :func:`escala.plan.calibrate_comm.copy_seconds`)."""
    if s.cluster.device.measured:
        from escala.plan.calibrate_comm import copy_seconds

        return copies * copy_seconds(4.0 * params, s.cluster.device.threads)
    return copies * 2 * 4.0 * params / s.cluster.device.memory_bandwidth


def paramserver_cost(
    s: Setting,
    workers: int,
    *,
    servers: int | None = None,
    aggregate: str = "device",
    codec: str = "none",
    placement: str | None = None,
) -> StepCost:
    servers = servers or s.cluster.ps_servers
    placement = placement or s.cluster.ps_placement
    b = s.replica_batch(workers)
    compute = s.compute(b, devices=workers)
    comm, desc = server_traffic(
        s, workers, servers=servers, aggregate=aggregate, codec=codec, placement=placement
    )
    est = s.profile.memory(max(1, math.ceil(b)))
    # Workers keep parameters, gradients and activations; the optimizer state lives on the servers.
    memory = float(est.peak_bytes - est.optimizer_bytes)
    shard = s.profile.param_bytes * (1 + s.profile.slots) / servers
    if placement == "colocated":
        memory += shard
    name = "paramserver" + ("+node" if aggregate == "node" else "") + ("" if codec == "none" else f"+{codec}")
    return StepCost(
        name,
        workers,
        compute,
        comm,
        b * workers,
        memory,
        wait=s.straggler_wait(compute, workers) if workers > 1 else 0.0,
        staleness=float(workers - 1),
        layout={"data": workers, "servers": servers},
        comm_total=comm,
        memory_detail={"server_shard": shard, "activations": float(est.activation_bytes)},
        note=f"push/pull, {desc}; asynchronous: expected staleness {workers - 1}",
    )

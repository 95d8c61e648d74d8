"""Data-parallel strategies: synchronous all-reduce (plain or compressed), local SGD, backup workers.

Every device holds a whole replica and processes ``b`` samples (``b = B`` under weak scaling, ``B / N``
under strong scaling). With compute ``c(b)`` and backward ``T_b = 2/3 c``:

* **all-reduce** (Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", 2017):
  gradients are reduced in buckets while backward runs (:mod:`escala.plan.overlap`), each bucket by a
  ring or tree all-reduce, hierarchical across nodes (:mod:`escala.plan.collectives`)::

      step = c(b) + exposed(buckets) + wait_N

  On a measured machine each bucket's all-reduce costs ``k`` times the link's alpha-beta time: ``k``
  is measured with the all-reduce issued right after a step of the model in lockstep, as training
  issues it, against the same all-reduce back to back (:meth:`Setting.allreduce_factor`);

* **compressed all-reduce**: the same buckets at ``ratio`` of the bytes plus encode time; non-summable
  codecs all-gather and decode ``N`` messages per bucket (:mod:`escala.plan.compression`);
* **local SGD** (Lin et al., "Don't Use Large Mini-Batches, Use Local SGD", ICLR 2020; Stich 2019):
  parameters are averaged every ``H`` steps, outside backward::

      step = c(b) + allreduce(4P) / H + wait_N / sqrt(H)

  (the sum of ``H`` exponential delays spreads like ``sqrt(H)`` while the mean cost is paid once per
  ``H`` steps: an approximation);
* **backup workers** (Chen et al. 2016): ``N`` devices, the ``n_b`` slowest gradients of each step are
  dropped, so ``N - n_b`` gradients count and the wait is that of the ``(N - n_b)``-th fastest; the
  gradients travel through parameter servers as in the paper (:mod:`escala.plan.paramserver`).

Memory per device: the whole-model estimate of :mod:`escala.memory.estimate` at ``b`` samples.
"""

from __future__ import annotations

import math

from escala.plan.collectives import group_allgather, group_allreduce
from escala.plan.compression import SUMMABLE, codec_seconds, wire_ratio
from escala.plan.overlap import buckets, exposed_comm
from escala.plan.step import BACKWARD_SHARE, Setting, StepCost

SGD_MOMENTUM = 0.9  # escala train's default momentum


def _replica_memory(s: Setting, batch: float) -> tuple[float, dict[str, float]]:
    est = s.profile.memory(max(1, math.ceil(batch)))
    return float(est.peak_bytes), {
        "state": float(est.param_bytes + est.grad_bytes + est.optimizer_bytes),
        "activations": float(est.activation_bytes),
    }


def gradient_comm(
    s: Setting,
    devices: int,
    compute: float,
    *,
    codec: str = "none",
    params_share: float = 1.0,
    stride: int = 1,
    factor: float = 1.0,
) -> tuple[float, float]:
    """(exposed, total) seconds of averaging the gradients of ``params_share`` of the model; a summable
    all-reduce costs ``factor`` times the link's (:meth:`Setting.allreduce_factor`)."""
    c = s.cluster
    ratio = wire_ratio(codec, s.qsgd_bits, s.topk_ratio)
    momentum = SGD_MOMENTUM if s.profile.optimizer == "sgd" else 0.0  # top-k's momentum correction (DGC)
    layers = [(p * params_share, f) for p, f in s.profile.grad_layers] or [
        (s.profile.params * params_share, 1.0)
    ]
    bucket_list = buckets(layers, c.bucket_bytes)
    busy = min(devices, c.devices_per_node)  # workers of a node coding at the same moment

    def cost(nbytes: float) -> float:
        enc, dec = codec_seconds(codec, nbytes / 4, c.device, momentum, busy)
        wire = nbytes * ratio
        if codec in SUMMABLE:
            return enc + factor * group_allreduce(wire, devices, c, stride=stride) + dec
        return enc + group_allgather(wire, devices, c, stride=stride) + devices * dec

    if devices <= 1:
        return 0.0, 0.0
    return exposed_comm(bucket_list, BACKWARD_SHARE * compute, cost, c.overlap)


def allreduce_cost(s: Setting, devices: int, codec: str = "none") -> StepCost:
    b = s.replica_batch(devices)
    compute = s.compute(b, devices=devices)
    factor = s.allreduce_factor(b, devices) if devices > 1 else 1.0
    exposed, total = gradient_comm(s, devices, compute, codec=codec, factor=factor)
    memory, detail = _replica_memory(s, b)
    name = "allreduce" if codec == "none" else f"allreduce+{codec}"
    return StepCost(
        name,
        devices,
        compute,
        exposed,
        b * devices,
        memory,
        wait=s.straggler_wait(compute, devices) if devices > 1 else 0.0,
        layout={"data": devices},
        comm_total=total,
        memory_detail=detail,
        note=f"{s.cluster.allreduce} all-reduce, {s.cluster.bucket_bytes / 2**20:.0f} MiB buckets"
        + (", overlapped with backward" if s.cluster.overlap else ""),
    )


def localsgd_cost(s: Setting, devices: int) -> StepCost:
    h = max(1, s.localsgd_h)
    b = s.replica_batch(devices)
    compute = s.compute(b, devices=devices)
    total = 0.0
    if devices > 1:  # the average follows a step, as the gradient all-reduce does
        total = s.allreduce_factor(b, devices) * group_allreduce(s.profile.param_bytes, devices, s.cluster)
    memory, detail = _replica_memory(s, b)
    wait = s.straggler_wait(compute, devices) / math.sqrt(h) if devices > 1 else 0.0
    return StepCost(
        f"localsgd(H={h})",
        devices,
        compute,
        total / h,
        b * devices,
        memory,
        wait=wait,
        layout={"data": devices},
        comm_total=total / h,
        memory_detail=detail,
        note=f"parameters averaged every {h} steps",
    )


def backup_count(s: Setting, devices: int) -> int:
    """Backups among ``devices`` workers: ``backups`` of them, at least one (none when ``backups`` is 0)."""
    return max(1, math.floor(s.backups * devices)) if s.backups > 0 else 0


def backup_cost(s: Setting, devices: int) -> StepCost | None:
    """``devices`` workers of which ``backup_count`` are backups; None when there are too few."""
    from escala.plan.paramserver import BACKUP_COPIES, server_traffic

    n_b = backup_count(s, devices)
    keep = devices - n_b
    if keep < 1:
        return None
    b = s.replica_batch(keep)
    compute = s.compute(b, devices=devices)
    # Rank 0 (the chief) holds the parameters and aggregates: its own gradient never travels.
    comm, detail_ps = server_traffic(s, devices - 1, copies=BACKUP_COPIES, chief_busy=True)
    memory, detail = _replica_memory(s, b)
    return StepCost(
        "backup",
        devices,
        compute,
        comm,
        b * keep,
        memory,
        wait=s.straggler_wait(compute, devices, keep),
        layout={"data": devices, "backups": n_b},
        comm_total=comm,
        memory_detail=detail,
        note=f"{n_b} backup(s): the slowest {n_b} gradients of each step are dropped; {detail_ps}",
    )

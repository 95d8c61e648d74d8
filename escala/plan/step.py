"""The inputs of one prediction (:class:`Setting`) and its output (:class:`StepCost`).

A step of a strategy on ``N`` devices takes

    step = compute + comm + bubble + wait + overhead

* ``compute``: the busy time of a device (forward + backward + update of its share of the work);
* ``comm``: communication that is *not* hidden behind compute (all-reduce after the overlap with
  backward, parameter-server push/pull, pipeline sends on the critical path, tensor-parallel
  all-reduces, encode/decode of compressed gradients);
* ``bubble``: pipeline idle time, fill/drain ``(K-1)`` slots plus the stage imbalance;
* ``wait``: synchronisation with the slowest worker when compute times vary (``stragglers.mean_delay``);
* ``overhead``: the fixed cost of a step that no FLOP or byte count sees (the framework's loop, hooks,
  message headers, process wake-ups): ``device.step_overhead``, or on this machine the measured step
  of an *empty* model under the same strategy minus what the model predicts for it
  (:func:`escala.plan.planner.measured_overhead`).

Throughput is ``samples per step / step``; scaling efficiency is ``throughput / (N x throughput of
one device)``. Compute time comes from FLOPs and the device's sustained rate, or, on a measured
device, from timing the model itself at the batch size each device gets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from escala.errors import UserError
from escala.plan.cluster import Cluster
from escala.plan.profile import ModelProfile

SCALING = ("weak", "strong")
BACKWARD_SHARE = 2 / 3  # backward costs about twice the forward (FLOP count of matmul/conv grads)


@dataclass
class Setting:
    cluster: Cluster
    profile: ModelProfile
    batch: int  # weak scaling: samples per replica; strong scaling: global samples per step
    scaling: str = "weak"
    localsgd_h: int = 8
    microbatches: int = 0  # pipeline micro-batches per replica batch (0: 4 x stages, at most the batch)
    qsgd_bits: int = 4
    topk_ratio: float = 0.01
    backups: float = 0.05  # backup workers as a fraction of the devices (at least 1; 0: none)

    def __post_init__(self) -> None:
        if self.scaling not in SCALING:
            raise UserError(f"--scaling {self.scaling!r}: choose weak or strong")
        if self.batch < 1:
            raise UserError(f"--batch-size {self.batch}: must be at least 1")

    def replica_batch(self, replicas: int) -> float:
        """Samples one data-parallel replica processes per step."""
        return float(self.batch) if self.scaling == "weak" else self.batch / replicas

    def compute(self, batch: float, fraction: float = 1.0, devices: int = 1) -> float:
        """Seconds of forward + backward (+ update) of ``fraction`` of the model on ``batch`` samples.

        On a measured device the model is timed with ``min(devices, devices_per_node)`` processes
        computing at once, since devices of this machine share its cores and memory bandwidth.
        """
        dev = self.cluster.device
        if dev.measured:
            from escala.plan.calibrate import model_step_seconds

            busy = min(devices, self.cluster.devices_per_node)
            return model_step_seconds(self.profile, max(1, round(batch)), dev.threads, busy=busy) * fraction
        return self.profile.flops_per_sample * batch * fraction / dev.flops(self.profile.precision)

    def recurrent_compute(self, batch: float, devices: int) -> float:
        """Seconds of a whole training step of a recurrent model as escala's time-step pipeline runs
        it: FLOPs on a described device; on a measured one, the engine itself timed in
        ``min(devices, devices_per_node)`` processes at once
        (:func:`escala.plan.calibrate_recurrent.recurrent_step_seconds`)."""
        if not self.cluster.device.measured:
            return self.compute(batch, devices=devices)
        from escala.plan.calibrate_recurrent import recurrent_step_seconds

        busy = min(devices, self.cluster.devices_per_node)
        return recurrent_step_seconds(
            self.profile, max(1, round(batch)), self.cluster.device.threads, busy=busy
        )

    def tensor_compute(self, batch: float, shards: int, devices: int) -> float:
        """Seconds of one tensor-parallel shard's step (no communication) on ``batch`` samples.

        From FLOPs: ``c(b) (s / T + 1 - s)`` with ``s`` the FLOP share of the split layers (unpaired
        layers run whole on every shard). On a measured device, the shard's own step as escala's
        engine runs it (DTensor at the shard's shapes), timed in ``min(devices, devices_per_node)``
        processes in lockstep (:func:`escala.plan.calibrate_tensor.tensor_shard_step_seconds`).
        """
        busy = min(devices, self.cluster.devices_per_node)
        if self.cluster.device.measured and shards > 1 and self.profile.tp_messages:
            from escala.plan.calibrate_tensor import tensor_shard_step_seconds

            return tensor_shard_step_seconds(
                self.profile, max(1, round(batch)), shards, self.cluster.device.threads, busy=busy
            )
        share = self.profile.tp_split_share
        return self.compute(batch, devices=devices) * (share / shards + (1 - share))

    def allreduce_factor(self, batch: float, devices: int) -> float:
        """On a measured device, how much slower the gradient all-reduce is when issued right after a
        step than back to back (:func:`escala.plan.calibrate.post_step_allreduce_factor`); else 1."""
        dev = self.cluster.device
        busy = min(devices, self.cluster.devices_per_node)
        if not dev.measured or busy <= 1:
            return 1.0
        from escala.plan.calibrate import post_step_allreduce_factor

        return post_step_allreduce_factor(self.profile, max(1, round(batch)), dev.threads, busy)

    def tensor_allreduce_factor(self, message_bytes: float, batch: float, shards: int) -> float:
        """On a measured device, how much slower a tensor-parallel activation all-reduce is when issued
        right after the shard's matmul than back to back
        (:func:`escala.plan.calibrate_tensor.tensor_allreduce_factor`); else 1."""
        dev = self.cluster.device
        if not dev.measured or shards <= 1 or shards > self.cluster.devices_per_node:
            return 1.0
        from escala.plan.calibrate_tensor import tensor_allreduce_factor

        return tensor_allreduce_factor(message_bytes, max(1, round(batch)), shards, dev.threads)

    def exchange_factor(self, batch: float, chief_busy: bool = False) -> float:
        """On a measured device, how much slower a parameter-server exchange (push, server update,
        reply) is when the worker issues it right after its step than back to back, with an idle
        server or (``chief_busy``) a backup chief computing its own step
        (:func:`escala.plan.calibrate_comm.exchange_after_step_factor`); else 1."""
        dev = self.cluster.device
        if not dev.measured or self.cluster.nodes > 1:
            return 1.0
        from escala.plan.calibrate_comm import exchange_after_step_factor

        return exchange_after_step_factor(
            self.profile, max(1, round(batch)), dev.threads, chief_busy=chief_busy
        )

    def straggler_wait(self, compute: float, workers: int, keep: int | None = None) -> float:
        """Expected wait for the ``keep``-th fastest of ``workers`` (all of them by default).

        Each worker's extra time is exponential with mean ``mu = mean_delay x compute``; the k-th
        smallest of n such draws has mean ``mu (H_n - H_{n-k})`` (H: harmonic numbers), so waiting
        for all n costs ``mu H_n`` and dropping the b slowest costs ``mu (H_n - H_b)`` (backup workers,
        Chen et al., "Revisiting Distributed Synchronous SGD", 2016). One worker waits ``mu``.
        """
        mu = self.cluster.straggler_delay * compute
        keep = workers if keep is None else keep
        return mu * (harmonic(workers) - harmonic(workers - keep))


def harmonic(n: int) -> float:
    return sum(1.0 / i for i in range(1, n + 1))


@dataclass
class StepCost:
    strategy: str
    devices: int
    compute: float
    comm: float
    samples: float
    memory: float  # bytes on the most loaded device
    bubble: float = 0.0
    wait: float = 0.0
    overhead: float = 0.0
    staleness: float = (
        0.0  # expected staleness of an update (asynchronous parameter servers): convergence, not time
    )
    layout: dict[str, int] = field(default_factory=dict)
    comm_total: float = 0.0  # communication before any overlap
    memory_detail: dict[str, float] = field(default_factory=dict)
    note: str = ""
    fits: bool = True
    efficiency: float = float("nan")

    @property
    def step(self) -> float:
        return self.compute + self.comm + self.bubble + self.wait + self.overhead

    @property
    def throughput(self) -> float:
        return self.samples / self.step if self.step > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "devices": self.devices,
            "layout": self.layout,
            "step_s": self.step,
            "compute_s": self.compute,
            "comm_s": self.comm,
            "bubble_s": self.bubble,
            "wait_s": self.wait,
            "overhead_s": self.overhead,
            "staleness": self.staleness,
            "comm_total_s": self.comm_total,
            "samples_per_step": self.samples,
            "throughput": self.throughput,
            "efficiency": self.efficiency,
            "memory_per_device": self.memory,
            "memory_detail": self.memory_detail,
            "fits": self.fits,
            "note": self.note,
        }

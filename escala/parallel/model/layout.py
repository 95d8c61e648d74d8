"""Where each process of a split model sits: which replica, which part of the model.

A job of ``D`` data-parallel replicas of a model split ``M`` ways (``M = K`` pipeline stages, ``T``
tensor-parallel shards or ``P`` spatial bands) has ``N = D x M`` processes. As in Megatron-LM, the
model-parallel dimension is the innermost one, so the ``M`` processes of a replica have neighbouring
ranks (on a real cluster: the same node, where the bandwidth for activations is):

    rank = d * M + m        replica d = rank // M,  part m = rank % M

Two families of process groups follow: the *model group* of replica ``d`` (ranks ``d*M .. d*M+M-1``)
carries activations, and the *data group* of part ``m`` (ranks ``m, M+m, 2M+m, ...``) averages the
gradients of that part over the replicas. :func:`validate_layout` checks a layout for any world size
without starting anything (``escala train --dry-run`` style checks and ``escala plan`` use it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import torch.distributed as dist

from escala.errors import UserError

KINDS = ("pipeline", "tensor", "spatial")


@dataclass(frozen=True)
class ProcessLayout:
    replicas: int  # D: data-parallel replicas
    kind: str | None  # which model-parallel form, None when the model is not split
    parts: int  # M: processes per replica

    @property
    def processes(self) -> int:
        return self.replicas * self.parts

    def replica(self, rank: int) -> int:
        return rank // self.parts

    def part(self, rank: int) -> int:
        return rank % self.parts

    def model_ranks(self, replica: int) -> list[int]:
        return list(range(replica * self.parts, (replica + 1) * self.parts))

    def data_ranks(self, part: int) -> list[int]:
        return [d * self.parts + part for d in range(self.replicas)]

    def describe(self) -> dict:
        """The layout as it goes into ``summary.json``."""
        return {
            "processes": self.processes,
            "data_parallel": self.replicas,
            "model_parallel": self.kind or "none",
            "parts_per_replica": self.parts,
            "model_groups": [self.model_ranks(d) for d in range(self.replicas)],
        }

    def groups(self, rank: int, timeout_s: float) -> tuple[dist.ProcessGroup | None, dist.ProcessGroup | None]:
        """(model group, data group) of ``rank``; every rank must call this, in the same order.

        None stands for "no group needed": the data group of a single replica, or the model group
        when it is the whole world (the default group serves).
        """
        timeout = timedelta(seconds=timeout_s)
        model_group = data_group = None
        if self.replicas > 1:
            # new_group is collective over the world: every rank creates every group.
            for d in range(self.replicas):
                g = dist.new_group(self.model_ranks(d), timeout=timeout)
                if d == self.replica(rank):
                    model_group = g
            for m in range(self.parts):
                g = dist.new_group(self.data_ranks(m), timeout=timeout)
                if m == self.part(rank):
                    data_group = g
        return model_group, data_group


def layout_from_config(config) -> ProcessLayout:
    """The layout ``config`` asks for, checked: at most one model-parallel form at a time."""
    asked = {k: int(getattr(config, k, 1)) for k in KINDS}
    split = {k: v for k, v in asked.items() if v > 1}
    if len(split) > 1:
        names = " and ".join(f"--{k} {v}" for k, v in split.items())
        raise UserError(
            f"{names}: escala splits a model one way at a time; choose one of --pipeline, --tensor, --spatial"
        )
    if not split:
        return ProcessLayout(config.workers, None, 1)
    kind, parts = next(iter(split.items()))
    return ProcessLayout(config.workers, kind, parts)


def validate_layout(world: int, *, pipeline: int = 1, tensor: int = 1, spatial: int = 1) -> ProcessLayout:
    """The layout of ``world`` processes with the given split, or a UserError saying why it cannot be."""
    for name, value in (("pipeline", pipeline), ("tensor", tensor), ("spatial", spatial)):
        if value < 1:
            raise UserError(f"{name} must be >= 1, got {value}")
    if world < 1:
        raise UserError(f"world size must be >= 1, got {world}")

    class _Asked:  # the config fields layout_from_config reads
        workers = 1

    asked = _Asked()
    asked.pipeline, asked.tensor, asked.spatial = pipeline, tensor, spatial
    parts = layout_from_config(asked).parts
    if world % parts:
        raise UserError(
            f"{world} processes do not divide into replicas of {parts} "
            f"({layout_from_config(asked).kind} {parts}); use a multiple of {parts}"
        )
    layout = layout_from_config(asked)
    return ProcessLayout(world // parts, layout.kind, parts)

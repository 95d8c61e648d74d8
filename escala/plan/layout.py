"""Dry-run of a process layout: pipeline K x tensor T x data D on a world of N processes, no hardware.

Ranks are ordered as in Megatron-LM, tensor innermost (its all-reduces are the most frequent, so its
``T`` processes should share a node), then pipeline, then data::

    rank = (d * K + k) * T + t        t = rank % T,  k = (rank // T) % K,  d = rank // (T K)

The checks, each a single :class:`UserError` naming the numbers: ``K, T, D >= 1``; ``K T D = N`` (``D``
defaults to ``N / (K T)`` and must then be a whole number); a tensor group inside one node (``T``
divides the devices per node); ``K`` at most the model's top-level layers; the replica batch splitting
into ``M`` micro-batches; ``N`` at most the devices of the cluster when one is given.
"""

from __future__ import annotations

from typing import Any

from escala.errors import UserError


def parse_layout(text: str) -> dict[str, int]:
    """``"pipeline=4,tensor=2,data=8"`` (any subset, any order; ``K``/``T``/``D`` also accepted)."""
    aliases = {
        "pipeline": "pipeline",
        "k": "pipeline",
        "tensor": "tensor",
        "t": "tensor",
        "data": "data",
        "d": "data",
    }
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        key, sep, value = part.partition("=")
        name = aliases.get(key.strip().lower())
        if not sep or name is None:
            raise UserError(f"--layout {text!r}: write pipeline=K,tensor=T,data=D (any of the three)")
        try:
            out[name] = int(value)
        except ValueError:
            raise UserError(
                f"--layout {text!r}: {key.strip()} must be a whole number, got {value.strip()!r}"
            ) from None
    return out


def validate_layout(
    world: int,
    *,
    pipeline: int = 1,
    tensor: int = 1,
    data: int | None = None,
    devices_per_node: int | None = None,
    cluster_devices: int | None = None,
    model_layers: int | None = None,
    batch: int | None = None,
    microbatches: int | None = None,
) -> dict[str, Any]:
    """The layout as a dict (sizes, groups of rank 0, placement), or a UserError saying why it cannot be."""
    if world < 1:
        raise UserError(f"--devices {world}: the world size must be at least 1")
    for name, value in (("pipeline", pipeline), ("tensor", tensor), ("data", data)):
        if value is not None and value < 1:
            raise UserError(f"--layout {name}={value}: must be at least 1")
    split = pipeline * tensor
    if data is None:
        if world % split:
            raise UserError(
                f"{world} processes do not divide into replicas of pipeline {pipeline} x tensor {tensor} = {split}; "
                f"use a multiple of {split}"
            )
        data = world // split
    if split * data != world:
        raise UserError(
            f"pipeline {pipeline} x tensor {tensor} x data {data} = {split * data} processes, but the world has {world}"
        )
    if cluster_devices is not None and world > cluster_devices:
        raise UserError(f"{world} processes do not fit on the cluster's {cluster_devices} devices")
    if (
        devices_per_node is not None
        and tensor > 1
        and devices_per_node % tensor
        and tensor < devices_per_node
    ):
        raise UserError(
            f"tensor {tensor} does not divide the {devices_per_node} devices of a node; a tensor group must sit in one node"
        )
    if devices_per_node is not None and tensor > devices_per_node:
        raise UserError(
            f"tensor {tensor} spans {-(-tensor // devices_per_node)} nodes of {devices_per_node} devices; "
            "a tensor group must sit inside one node (its all-reduces run every layer)"
        )
    if model_layers is not None and pipeline > model_layers:
        raise UserError(
            f"pipeline {pipeline} stages: the model has only {model_layers} top-level layers to cut"
        )
    if batch is not None and microbatches:
        if microbatches > batch:
            raise UserError(f"{microbatches} micro-batches do not fit in a replica batch of {batch} samples")
    rank0 = {
        "tensor_group": list(range(tensor)),
        "pipeline_group": [k * tensor for k in range(pipeline)],
        "data_group": [d * pipeline * tensor for d in range(data)],
    }
    out: dict[str, Any] = {
        "world": world,
        "pipeline": pipeline,
        "tensor": tensor,
        "data": data,
        "rank0_groups": rank0,
    }
    if devices_per_node:
        out["nodes"] = -(-world // devices_per_node)
        out["pipeline_crosses_nodes"] = pipeline * tensor > devices_per_node
    return out


def rank_coords(rank: int, pipeline: int, tensor: int) -> tuple[int, int, int]:
    """(data d, pipeline stage k, tensor shard t) of ``rank``."""
    return rank // (tensor * pipeline), (rank // tensor) % pipeline, rank % tensor

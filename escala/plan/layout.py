"""Dry-run of a process layout on a world of N processes, no hardware: the layout ``escala train`` would
use, checked by the trainer's own code, plus what only a cluster description can tell.

The layout is :class:`escala.parallel.model.layout.ProcessLayout` (built and checked by its
:func:`~escala.parallel.model.layout.validate_layout`, the function ``escala train`` uses): ``D``
data-parallel replicas of a model split ``M`` ways, one way at a time (``M = K`` pipeline stages, ``T``
tensor shards or ``P`` spatial bands), model-parallel ranks innermost as in Megatron-LM::

    rank = d * M + m        replica d = rank // M,  part m = rank % M

On top of it, each a single :class:`UserError` naming the numbers: ``D`` when given must be ``N / M``;
``N`` at most the cluster's devices; a tensor (or spatial) group inside one node (its all-reduces or
halo exchanges run every layer: ``M`` divides the devices per node); ``K`` at most the model's
top-level layers; the replica batch splitting into ``M`` micro-batches.
"""

from __future__ import annotations

from typing import Any

from escala.errors import UserError
from escala.parallel.model.layout import ProcessLayout
from escala.parallel.model.layout import validate_layout as training_layout

ALIASES = {
    "pipeline": "pipeline",
    "k": "pipeline",
    "tensor": "tensor",
    "t": "tensor",
    "spatial": "spatial",
    "p": "spatial",
    "data": "data",
    "d": "data",
}


def parse_layout(text: str) -> dict[str, int]:
    """``"pipeline=4,data=8"`` (any subset, any order; ``K``/``T``/``P``/``D`` also accepted)."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        key, sep, value = part.partition("=")
        name = ALIASES.get(key.strip().lower())
        if not sep or name is None:
            raise UserError(f"--layout {text!r}: write pipeline=K, tensor=T or spatial=P, and data=D")
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
    spatial: int = 1,
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
    if data is not None and data < 1:
        raise UserError(f"--layout data={data}: must be at least 1")
    layout = training_layout(world, pipeline=pipeline, tensor=tensor, spatial=spatial)
    kind, parts = layout.kind or "none", layout.parts
    if data is not None and data != layout.replicas:
        raise UserError(f"{kind} {parts} x data {data} = {parts * data} processes, but the world has {world}")
    if cluster_devices is not None and world > cluster_devices:
        raise UserError(f"{world} processes do not fit on the cluster's {cluster_devices} devices")
    if devices_per_node is not None and layout.kind in ("tensor", "spatial") and parts > 1:
        if parts > devices_per_node:
            raise UserError(
                f"{kind} {parts} spans {-(-parts // devices_per_node)} nodes of {devices_per_node} devices; "
                f"a {kind} group must sit inside one node (it exchanges activations every layer)"
            )
        if devices_per_node % parts:
            raise UserError(
                f"{kind} {parts} does not divide the {devices_per_node} devices of a node; "
                f"a {kind} group must sit in one node"
            )
    if model_layers is not None and pipeline > model_layers:
        raise UserError(
            f"pipeline {pipeline} stages: the model has only {model_layers} top-level layers to cut"
        )
    if batch is not None and microbatches and microbatches > batch:
        raise UserError(f"{microbatches} micro-batches do not fit in a replica batch of {batch} samples")
    out: dict[str, Any] = {
        "world": world,
        "kind": kind,
        "parts": parts,
        "data": layout.replicas,
        "pipeline": pipeline,
        "tensor": tensor,
        "spatial": spatial,
        "rank0_groups": {"model_group": layout.model_ranks(0), "data_group": layout.data_ranks(0)},
        "layout": layout.describe(),
    }
    if devices_per_node:
        out["nodes"] = -(-world // devices_per_node)
        out["model_group_crosses_nodes"] = parts > devices_per_node or devices_per_node % parts != 0
    return out


def rank_coords(rank: int, layout: ProcessLayout) -> tuple[int, int]:
    """(replica d, part m) of ``rank``: the trainer's own mapping."""
    return layout.replica(rank), layout.part(rank)

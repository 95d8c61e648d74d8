"""Tensor (intra-layer) parallelism for fully connected layers, Megatron-style, on PyTorch's DTensor.

Megatron-LM (Shoeybi et al., "Megatron-LM: Training Multi-Billion Parameter Language Models Using
Model Parallelism", 2019) splits a pair of consecutive Linear layers ``Y = act(X A) B`` over T
processes without communicating in between:

* the first layer is **column-parallel**: ``A = [A_1 ... A_T]`` by output features, rank t computes
  ``Y_t = act(X A_t)`` (an elementwise activation commutes with the column split);
* the second is **row-parallel**: ``B = [B_1; ...; B_T]`` by input features, rank t computes the
  partial product ``Y_t B_t`` and one all-reduce sums them: ``Z = sum_t Y_t B_t``.

The conjugate operators are Megatron's f (identity forward, all-reduce of the input gradient
backward) before the column layer and g (all-reduce forward, identity backward) after the row layer,
so each pair costs one all-reduce of the activations forward and one of the input gradient backward
(skipped for the first layer, whose input needs no gradient).

The engine is PyTorch's tensor-parallel API (``torch.distributed.tensor.parallel``:
``ColwiseParallel`` / ``RowwiseParallel`` on a ``DeviceMesh``), which works on a CPU mesh over gloo
in torch 2.13; it implements f and g as DTensor redistributions. escala adds the walk that finds the
Linear pairs of a sequential model and the checks on the split.
"""

from __future__ import annotations

import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

from escala.errors import UserError

# Modules that act element by element: they commute with a split of the feature dimension, so they
# may sit between a column-parallel layer and its row-parallel partner.
ELEMENTWISE = (nn.ReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.Identity, nn.Dropout)


def linear_pairs(model: nn.Module) -> tuple[list[tuple[str, str]], list[str]]:
    """Pairs (column layer, row layer) of Linear children separated only by elementwise modules, and
    the Linear layers left unpaired (they stay replicated on every rank)."""
    if not isinstance(model, nn.Sequential):
        raise UserError(f"tensor parallelism needs an nn.Sequential model (got {type(model).__name__})")
    pairs: list[tuple[str, str]] = []
    single: list[str] = []
    open_col: str | None = None
    for name, child in model.named_children():
        if isinstance(child, nn.Linear):
            if open_col is None:
                open_col = name
            else:
                pairs.append((open_col, name))
                open_col = None
        elif not isinstance(child, ELEMENTWISE) and open_col is not None:
            # Something that mixes features (a norm, a reshape) cannot see a column shard.
            single.append(open_col)
            open_col = None
    if open_col is not None:
        single.append(open_col)
    return pairs, single


def tensor_mesh(size: int | None = None) -> DeviceMesh:
    """A 1-D CPU device mesh over all ranks of the default process group."""
    world = dist.get_world_size()
    if size is not None and size != world:
        raise UserError(f"--tensor {size} needs {size} processes in the tensor group, the world has {world}")
    return init_device_mesh("cpu", (world,))


def tensor_parallel(model: nn.Module, mesh: DeviceMesh | None = None) -> nn.Module:
    """Shard the Linear pairs of ``model`` in place over ``mesh`` (default: the whole world).

    Every rank must hold the same initial weights (same seed) and feed the same input; outputs come
    back replicated (plain tensors) on every rank. Parameters of paired layers become DTensors whose
    local shard is 1/T of the weight; ``param.full_tensor()`` gathers the whole matrix.

    Raises:
        UserError: no Linear pair to split, or a split width not divisible by T.
    """
    mesh = mesh or tensor_mesh()
    t = mesh.size()
    pairs, _ = linear_pairs(model)
    if not pairs:
        raise UserError("tensor parallelism found no pair of Linear layers to split in the model")
    plan = {}
    for col, row in pairs:
        width = getattr(model, col).out_features
        if width % t:
            raise UserError(
                f"layer {col} has {width} output features, not divisible by tensor-parallel size {t}"
            )
        plan[col] = ColwiseParallel()
        plan[row] = RowwiseParallel()
    return parallelize_module(model, mesh, plan)


def local_parameter_count(model: nn.Module) -> int:
    """Parameter elements this rank stores (shards of DTensors, whole replicated tensors)."""
    return sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in model.parameters())


def full_parameters(model: nn.Module) -> dict[str, object]:
    """Every parameter as a whole tensor (collective: call on all ranks)."""
    return {
        n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach() for n, p in model.named_parameters()
    }

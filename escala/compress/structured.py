"""Structured pruning: remove whole neurons (Linear rows) or channels (Conv filters) for real speed.

Masks leave a layer's shape, and so its dense cost, unchanged. Removing output unit j of a layer
instead makes the layer physically smaller and deletes the matching input column(s) of the layer
that consumes it, so the thinned network is an ordinary dense network that runs faster at any batch
size (Li et al., "Pruning filters for efficient ConvNets", ICLR 2017, rank filters by their L1/L2 norm;
``torch.nn.utils.prune.ln_structured`` does the ranking here).

Works on the zoo's flat sequential models (mlp, lenet300, lenet5): between a layer and its consumer
only per-unit operations may sit (ReLU, dropout, pooling, flatten). The classifier's outputs are never
removed. :func:`reshape_layers` rebuilds layers at recorded shapes so a thinned model can be reloaded.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from escala.compress.targets import weight_layers
from escala.errors import UserError

# Modules that act on each unit (or channel) independently and keep their order.
_PASS_THROUGH = (nn.ReLU, nn.Dropout, nn.MaxPool2d, nn.AvgPool2d, nn.Flatten, nn.Identity, nn.Tanh)


def _chain(model: nn.Module) -> list[tuple[str, nn.Module]]:
    children = list(model.named_children())
    for name, child in children:
        if not isinstance(child, (nn.Linear, nn.Conv2d, *_PASS_THROUGH)):
            raise UserError(
                f"structured pruning needs a flat chain of Linear/Conv2d layers; module {name!r} "
                f"({type(child).__name__}) is in the way (use mlp, lenet300 or lenet5)"
            )
    return children


def _rebuilt(old: nn.Module, out_keep: torch.Tensor | None, in_keep: torch.Tensor | None) -> nn.Module:
    """A copy of ``old`` restricted to the kept output rows / input columns."""
    w = old.weight.detach()
    if out_keep is not None:
        w = w[out_keep]
    if in_keep is not None:
        w = w[:, in_keep]
    bias = None if old.bias is None else old.bias.detach()
    if bias is not None and out_keep is not None:
        bias = bias[out_keep]
    new = _like(old, tuple(w.shape))
    with torch.no_grad():
        new.weight.copy_(w)
        if bias is not None:
            new.bias.copy_(bias)
    return new


def _like(old: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """A layer with ``old``'s hyper-parameters and a weight of ``shape``."""
    if isinstance(old, nn.Linear):
        return nn.Linear(shape[1], shape[0], bias=old.bias is not None)
    if isinstance(old, nn.Conv2d):
        return nn.Conv2d(
            shape[1] * old.groups,
            shape[0],
            old.kernel_size,
            stride=old.stride,
            padding=old.padding,
            dilation=old.dilation,
            groups=old.groups,
            bias=old.bias is not None,
            padding_mode=old.padding_mode,
        )
    raise UserError(f"cannot reshape a {type(old).__name__} layer")


def thin(model: nn.Module, fraction: float | dict[str, float], norm: int = 2) -> dict[str, int]:
    """Remove ``fraction`` of the output units of every hidden weight layer (smallest L``norm`` first).

    ``fraction`` is one number for every layer that has a consumer, or per-layer values. Returns the
    new output width of each thinned layer. The model is changed in place.
    """
    children = _chain(model)
    weights = [(i, name) for i, (name, m) in enumerate(children) if isinstance(m, (nn.Linear, nn.Conv2d))]
    if isinstance(fraction, dict):
        last = weights[-1][1] if weights else None
        if last in fraction:
            raise UserError(f"structured pruning: {last!r} is the classifier; its outputs cannot be removed")
    widths = {}
    for (idx, name), (next_idx, _next_name) in zip(weights, weights[1:]):
        f = fraction.get(name, 0.0) if isinstance(fraction, dict) else float(fraction)
        if not 0.0 <= f < 1.0:
            raise UserError(f"structured pruning: fraction for {name!r} must be in [0, 1), got {f}")
        layer, consumer = children[idx][1], children[next_idx][1]
        units = layer.weight.shape[0]
        amount = int(f * units)
        if amount == 0:
            continue
        # ln_structured ranks rows (dim 0) by their L_n norm and masks the weakest whole rows.
        probe = _like(layer, tuple(layer.weight.shape))
        with torch.no_grad():
            probe.weight.copy_(layer.weight)
        torch_prune.ln_structured(probe, "weight", amount=amount, n=norm, dim=0)
        keep = probe.weight_mask.flatten(1).amax(dim=1) > 0
        in_keep = keep
        if isinstance(consumer, nn.Linear) and consumer.in_features != units:
            # Conv -> Flatten -> Linear: each channel owns a contiguous block of the flat features.
            per_channel = consumer.in_features // units
            in_keep = keep.repeat_interleave(per_channel)
        setattr(model, children[idx][0], _rebuilt(layer, keep, None))
        setattr(model, children[next_idx][0], _rebuilt(consumer, None, in_keep))
        children = list(model.named_children())
        widths[name] = int(keep.sum())
    return widths


def layer_shapes(model: nn.Module) -> dict[str, list[int]]:
    """Weight shape of every weight layer (recorded in the compressed file)."""
    return {name: list(m.weight.shape) for name, m in weight_layers(model).items()}


def reshape_layers(model: nn.Module, shapes: dict[str, list[int]]) -> None:
    """Replace each layer whose weight shape differs from ``shapes`` by a fresh one of that shape."""
    layers = weight_layers(model)
    for name, shape in shapes.items():
        if name not in layers:
            raise UserError(f"compressed file names layer {name!r}, which this model does not have")
        if list(layers[name].weight.shape) != list(shape):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, _like(layers[name], tuple(shape)))

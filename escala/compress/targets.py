"""Which layers a compression step works on, addressed by the names of ``model.named_modules()``.

Deep Compression prunes and quantizes the weight matrices of fully connected and convolutional
layers; biases, BatchNorm parameters and buffers are small and stay as they are. A recipe may name
layers; a name that is not a Linear/Conv layer of the model is a one-line :class:`UserError` listing
the names that exist.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from escala.errors import UserError

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def weight_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every Linear/Conv module of ``model`` by qualified name, in forward (registration) order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS) and name}


def select_layers(model: nn.Module, names: Iterable[str] | None, step: str) -> dict[str, nn.Module]:
    """The layers ``names`` (all weight layers when empty/None); unknown names raise a UserError."""
    layers = weight_layers(model)
    wanted = list(names or [])
    if not wanted:
        return layers
    unknown = [n for n in wanted if n not in layers]
    if unknown:
        raise UserError(
            f"{step}: layer {unknown[0]!r} does not exist or has no weight matrix; "
            f"layers of this model: {', '.join(layers)}"
        )
    return {n: layers[n] for n in wanted}


def check_layer_keys(model: nn.Module, mapping: dict[str, object], step: str) -> None:
    """Per-layer settings of a recipe (``[prune.sparsity] fc1 = 0.9``) must name real layers."""
    select_layers(model, list(mapping), step)

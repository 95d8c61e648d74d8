"""Magnitude pruning with fixed masks (Han, Pool, Tran and Dally, "Learning both weights and
connections for efficient neural networks", NeurIPS 2015).

A weight survives when its magnitude exceeds a per-layer threshold: either ``quality x std(W)``
(the paper's rule, the std taken over the layer's weights) or the magnitude that removes a target
fraction of them. Masks are attached with ``torch.nn.utils.prune`` (the real engine): the layer keeps
``weight_orig`` as its parameter and a ``weight_mask`` buffer, and a forward pre-hook recomputes
``weight = weight_orig * weight_mask`` before every forward. The gradient of a masked entry of
``weight_orig`` is therefore exactly zero and the effective weight stays zero through retraining,
whatever the optimizer does to ``weight_orig``. Pruning again adds a mask to the container, so
iterative prune-retrain rounds only ever remove more connections. :func:`make_permanent` folds the
masks into plain weights once retraining is over.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from escala.compress.targets import weight_layers
from escala.errors import UserError


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight the layer computes with (``weight_orig * weight_mask`` while a mask is attached)."""
    if hasattr(module, "weight_mask") and hasattr(module, "weight_orig"):
        return (module.weight_orig * module.weight_mask).detach()
    return module.weight.detach()


def magnitude_masks(
    layers: dict[str, nn.Module],
    sparsity: dict[str, float] | None = None,
    quality: dict[str, float] | None = None,
) -> dict[str, torch.Tensor]:
    """Keep-masks (1 = keep) per layer from weight magnitudes.

    ``sparsity[name]`` = s removes the ``ceil(s * n)`` smallest-magnitude weights of the layer
    (counting those already zero); ``quality[name]`` = q removes every weight with
    ``|w| <= q * std(w)`` (Han et al. 2015). A layer in neither mapping keeps its current mask.
    Weights already pruned stay pruned.
    """
    sparsity, quality = sparsity or {}, quality or {}
    masks = {}
    for name, module in layers.items():
        w = effective_weight(module)
        current = module.weight_mask.detach() if hasattr(module, "weight_mask") else torch.ones_like(w)
        if name in quality:
            threshold = float(quality[name]) * float(w.std())
            keep = (w.abs() > threshold).to(w.dtype)
        elif name in sparsity:
            s = float(sparsity[name])
            if not 0.0 <= s < 1.0:
                raise UserError(f"prune: sparsity of layer {name!r} must be in [0, 1), got {s}")
            n_remove = math.ceil(s * w.numel())
            keep = torch.ones_like(w)
            if n_remove > 0:
                # Sort on |w| with pruned entries first so they are counted among the removed ones.
                order = torch.argsort(w.abs().flatten(), stable=True)
                keep.view(-1)[order[:n_remove]] = 0.0
        else:
            keep = torch.ones_like(w)
        masks[name] = keep * current
    return masks


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Attach ``masks`` with ``torch.nn.utils.prune.custom_from_mask`` (combined with any existing mask)."""
    layers = weight_layers(model)
    for name, mask in masks.items():
        module = layers[name]
        if hasattr(module, "weight_mask"):
            # custom_from_mask would multiply the new mask into the old one; ours already contain it,
            # so fold the old hook away first and attach the full mask once.
            torch_prune.remove(module, "weight")
        torch_prune.custom_from_mask(module, "weight", mask.to(module.weight.device))


def detach_masked(model: nn.Module) -> None:
    """Recompute each masked ``weight`` outside autograd so the model can be deep-copied.

    ``torch.nn.utils.prune`` keeps ``weight`` as a non-leaf tensor between forwards, which
    ``copy.deepcopy`` refuses; the next forward pre-hook recomputes it with autograd again.
    """
    for module in model.modules():
        if hasattr(module, "weight_mask") and hasattr(module, "weight_orig"):
            with torch.no_grad():
                module.weight = module.weight_orig * module.weight_mask


def make_permanent(model: nn.Module) -> None:
    """Fold every mask into its weight: plain ``weight`` parameters with exact zeros, no hooks."""
    for module in model.modules():
        hooks = [
            h for h in module._forward_pre_hooks.values() if isinstance(h, torch_prune.BasePruningMethod)
        ]
        for hook in hooks:
            torch_prune.remove(module, hook._tensor_name)
            with torch.no_grad():
                # orig * 0 is -0.0 for negative orig; store one zero so files round-trip bit-exactly.
                w = getattr(module, hook._tensor_name)
                w[w == 0] = 0.0


def round_sparsity(final: float, round_index: int, rounds: int) -> float:
    """Sparsity to reach after round ``round_index`` (1-based) of ``rounds``.

    Each round removes the same fraction of the weights still alive, so round r keeps
    ``(1 - final) ** (r / rounds)`` of them: gentle early cuts, as iterative pruning prescribes.
    """
    return 1.0 - (1.0 - final) ** (round_index / rounds)


def sparsity(model: nn.Module) -> dict[str, dict[str, float]]:
    """Per weight layer: number of weights, number of non-zeros and the fraction kept (density)."""
    stats = {}
    for name, module in weight_layers(model).items():
        w = effective_weight(module)
        nonzero = int((w != 0).sum())
        stats[name] = {"weights": w.numel(), "nonzero": nonzero, "density": nonzero / max(w.numel(), 1)}
    return stats

"""Rounding a real value onto a grid of representable values: to nearest (ties to even) or stochastically.

Every format in this package reduces quantization to one step: given ``x`` and the spacing ``q`` of
the grid around it (a power of two per element for floating point, a constant for fixed point),
return ``q * r(x / q)`` where ``r`` rounds to an integer. ``x / q`` and the product are exact in
float32 because ``q`` is a power of two and the grid is coarser than float32's.

Stochastic rounding (Forsythe 1959; Gupta et al., "Deep learning with limited numerical precision",
ICML 2015) rounds up with probability equal to the distance from the lower grid point, so
``E[r(y)] = y``: small updates survive in expectation instead of always rounding away.
"""

from __future__ import annotations

import torch


def round_nearest(y: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer, ties to even (IEEE 754's default, what hardware casts do)."""
    return torch.round(y)


def round_stochastic(y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Round down or up at random with ``P(up) = y - floor(y)``; unbiased: ``E[result] = y``.

    ``y - floor(y)`` is exact in float32 (the two are within one unit of each other), so the
    probability is exactly the fractional part, not an approximation of it.
    """
    low = torch.floor(y)
    frac = y - low
    u = torch.rand(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    return low + (u < frac).to(y.dtype)


def round_to_integer(y: torch.Tensor, stochastic: bool, generator: torch.Generator | None = None):
    return round_stochastic(y, generator) if stochastic else round_nearest(y)


def quantize_on_grid(
    x: torch.Tensor, step: torch.Tensor | float, stochastic: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``step * round(x / step)``: the nearest (or a stochastically chosen) multiple of ``step``."""
    return round_to_integer(x / step, stochastic, generator) * step

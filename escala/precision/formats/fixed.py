"""Signed fixed point Qm.n: one sign bit, ``m`` integer bits, ``n`` fraction bits (1 + m + n bits).

Values are multiples of ``2**-n`` in ``[-2**m, 2**m - 2**-n]`` (two's complement range). As in DSP
hardware (and Gupta et al. 2015's fixed-point training), results outside the range saturate to the
nearest end instead of wrapping; there is no infinity, NaN stays NaN so a diverged run still shows
it, and there is no negative zero (-0.0 becomes 0.0).
"""

from __future__ import annotations

from typing import Any

import torch

from escala.errors import UserError
from escala.precision.formats.base import Format
from escala.precision.formats.rounding import quantize_on_grid


class FixedPoint(Format):
    name = "fixed"

    def __init__(self, int_bits: int = 7, frac_bits: int = 8) -> None:
        if int_bits < 0 or frac_bits < 0 or int_bits + frac_bits < 1 or int_bits + frac_bits > 30:
            raise UserError(
                f"fixed point Q{int_bits}.{frac_bits}: integer and fraction bits must be >= 0, "
                "with 1 to 30 of them in total"
            )
        self.int_bits, self.frac_bits = int(int_bits), int(frac_bits)
        self.step = 2.0**-self.frac_bits
        self.max = 2.0**self.int_bits - self.step
        self.min = -(2.0**self.int_bits)

    def quantize(self, x, stochastic=False, generator=None):
        x = x.float()
        y = quantize_on_grid(x, self.step, stochastic, generator)
        # clamp propagates NaN; "+ 0.0" turns -0.0 into +0.0 (a two's complement word has one zero).
        return torch.clamp(y, self.min, self.max) + 0.0

    def describe(self) -> dict[str, Any]:
        return {
            "format": f"Q{self.int_bits}.{self.frac_bits}",
            "int_bits": self.int_bits,
            "frac_bits": self.frac_bits,
        }

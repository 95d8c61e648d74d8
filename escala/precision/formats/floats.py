"""Binary floating point formats with ``e`` exponent and ``m`` mantissa bits, simulated in float32.

A normal value is ``(1 + f / 2**m) * 2**E`` with ``emin <= E <= emax``; below ``2**emin`` the
spacing stays ``2**(emin - m)`` (gradual underflow through subnormals, IEEE 754). Quantizing ``x``
therefore rounds ``x`` to a multiple of ``2**(max(floor(log2|x|), emin) - m)``; results whose
magnitude exceeds the largest finite value become infinity (IEEE overflow, which with
round-to-nearest starts at ``max + ulp/2``) or saturate to ``max`` (the OCP FP8 E4M3 convention,
which has no infinity). Signed zeros, infinities and NaN pass through as in IEEE arithmetic.

Formats: ``fp16`` (IEEE binary16, e5m10), ``bf16`` (bfloat16, e8m7, Kalamkar et al. 2019), and the
two FP8 formats of Micikevicius et al., "FP8 formats for deep learning" (2022): ``fp8e4m3``
(bias 7, max 448, no infinity, saturating) and ``fp8e5m2`` (IEEE-like, max 57344). Rounding to
nearest reproduces PyTorch's own casts to ``float16``, ``bfloat16``, ``float8_e4m3fn`` and
``float8_e5m2`` bit for bit (tested).
"""

from __future__ import annotations

from typing import Any

import torch

from escala.precision.formats.base import Format
from escala.precision.formats.rounding import round_to_integer


class FloatFormat(Format):
    """A binary floating point format with subnormals; see the module docstring for the math."""

    def __init__(
        self,
        name: str,
        exp_bits: int,
        man_bits: int,
        *,
        emax: int | None = None,
        max_value: float | None = None,
        overflow: str = "inf",
        torch_dtype: torch.dtype | None = None,
    ) -> None:
        if overflow not in ("inf", "saturate"):
            raise ValueError("overflow must be 'inf' or 'saturate'")
        bias = 2 ** (exp_bits - 1) - 1
        self.name = name
        self.exp_bits, self.man_bits = exp_bits, man_bits
        self.emin = 1 - bias
        self.emax = bias if emax is None else emax
        self.max = max_value if max_value is not None else (2.0 - 2.0**-man_bits) * 2.0**self.emax
        self.min_normal = 2.0**self.emin
        self.min_subnormal = 2.0 ** (self.emin - man_bits)
        self.overflow = overflow
        self.torch_dtype = torch_dtype  # the PyTorch dtype this format matches, if there is one

    def ulp_exponent(self, x: torch.Tensor) -> torch.Tensor:
        """``max(floor(log2|x|), emin) - m``: the exponent of the grid spacing around each ``x``."""
        # frexp gives |x| = f * 2**e with f in [0.5, 1), so floor(log2|x|) = e - 1, exactly (no log).
        e = torch.frexp(x).exponent.to(torch.int32) - 1
        return torch.clamp(e, min=self.emin) - self.man_bits

    def quantize(self, x, stochastic=False, generator=None):
        if not stochastic and self.torch_dtype is not None:
            # PyTorch's cast rounds to nearest even exactly like quantize_generic (tested bit for bit)
            # in two kernels instead of ten.
            return x.to(self.torch_dtype).float()
        return self.quantize_generic(x, stochastic, generator)

    def quantize_generic(self, x, stochastic=False, generator=None):
        """Round onto the grid by the spacing formula of the module docstring (any e, m)."""
        x = x.float()
        step = torch.ldexp(torch.ones_like(x), self.ulp_exponent(x))
        y = round_to_integer(x / step, stochastic, generator) * step
        too_big = y.abs() > self.max
        if self.overflow == "inf":
            return torch.where(too_big, torch.copysign(torch.full_like(y, float("inf")), y), y)
        return torch.where(too_big, torch.copysign(torch.full_like(y, self.max), y), y)

    def describe(self) -> dict[str, Any]:
        return {
            "format": self.name,
            "exp_bits": self.exp_bits,
            "man_bits": self.man_bits,
            "max": self.max,
            "min_subnormal": self.min_subnormal,
        }


def fp16() -> FloatFormat:
    return FloatFormat("fp16", 5, 10, torch_dtype=torch.float16)


def bf16() -> FloatFormat:
    return FloatFormat("bf16", 8, 7, torch_dtype=torch.bfloat16)


def fp8e4m3() -> FloatFormat:
    # E4M3 spends the all-ones exponent on normal values (only S.1111.111 is NaN): emax 8, max 448.
    return FloatFormat(
        "fp8e4m3", 4, 3, emax=8, max_value=448.0, overflow="saturate", torch_dtype=torch.float8_e4m3fn
    )


def fp8e5m2() -> FloatFormat:
    return FloatFormat("fp8e5m2", 5, 2, torch_dtype=torch.float8_e5m2)

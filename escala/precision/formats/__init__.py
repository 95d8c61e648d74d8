"""Simulated number formats: fixed point, binary floating point (fp16, bf16, fp8) and LNS.

Every format is a :class:`~escala.precision.formats.base.Format`: ``quantize(x, stochastic)`` puts
float32 values on the format's grid, ``mul``/``add`` do the format's arithmetic on on-grid values.
:func:`make_format` builds one by the name used in the config (``--simulate``).
"""

from __future__ import annotations

from escala.errors import UserError
from escala.precision.formats.base import Format
from escala.precision.formats.fixed import FixedPoint
from escala.precision.formats.floats import FloatFormat, bf16, fp8e4m3, fp8e5m2, fp16
from escala.precision.formats.lns import LNS

FORMATS = ("fixed", "bf16", "fp16", "fp8e4m3", "fp8e5m2", "lns")

__all__ = ["FORMATS", "LNS", "FixedPoint", "FloatFormat", "Format", "make_format"]


def make_format(
    name: str,
    *,
    fixed_int_bits: int = 7,
    fixed_frac_bits: int = 8,
    lns_int_bits: int = 6,
    lns_frac_bits: int = 8,
    lns_add: str = "exact",
) -> Format:
    """The format called ``name`` (one of :data:`FORMATS`); the keyword options apply to fixed/lns."""
    if name == "fixed":
        return FixedPoint(fixed_int_bits, fixed_frac_bits)
    if name == "lns":
        return LNS(lns_int_bits, lns_frac_bits, add=lns_add)
    floats = {"bf16": bf16, "fp16": fp16, "fp8e4m3": fp8e4m3, "fp8e5m2": fp8e5m2}
    if name in floats:
        return floats[name]()
    raise UserError(f"simulate format {name!r} is unknown; choose one of {', '.join(FORMATS)}")

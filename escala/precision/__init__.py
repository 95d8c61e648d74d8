"""Precision: mixed precision with loss scaling, simulated number formats, Kahan-compensated updates.

* :mod:`escala.precision.mixed`: :class:`Precision`, what the trainer calls (autocast, GradScaler).
* :mod:`escala.precision.formats`: fixed point, fp16/bf16/fp8 and logarithmic (LNS) quantizers.
* :mod:`escala.precision.simulate`: a format in the matmuls only, or everywhere.
* :mod:`escala.precision.kahan`: weight updates in a format, plain or Kahan-compensated.
"""

from escala.precision.formats import FORMATS, make_format
from escala.precision.kahan import KahanUpdates
from escala.precision.mixed import Precision, format_from_config
from escala.precision.simulate import format_matmul, simulate_model

__all__ = [
    "FORMATS",
    "KahanUpdates",
    "Precision",
    "format_from_config",
    "format_matmul",
    "make_format",
    "simulate_model",
]

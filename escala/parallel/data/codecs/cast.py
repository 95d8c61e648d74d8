"""Half-precision casts: send gradients as fp16 or bf16 (2 bytes instead of 4).

fp16 keeps 10 mantissa bits but overflows above 65504, so callers scale by 1/N *before* the cast
(PyTorch's own ``fp16_compress_hook`` does the same); bf16 keeps fp32's exponent range with 7
mantissa bits. Both sums stay meaningful, so these codecs ride on an all-reduce.
"""

from __future__ import annotations

import torch

from escala.parallel.data.codecs.base import Codec, Slots


class Cast(Codec):
    summable = True

    def __init__(self, dtype: torch.dtype, name: str):
        self.dtype = dtype
        self.name = name

    def encode(self, x: torch.Tensor, slots: Slots | None = None) -> torch.Tensor:
        return x.to(self.dtype)

    def decode(self, wire: torch.Tensor, numel: int) -> torch.Tensor:
        if wire.dtype == torch.uint8:  # arrived as raw bytes over a point-to-point link
            wire = wire.view(self.dtype)
        return wire.float()


def fp16() -> Cast:
    return Cast(torch.float16, "fp16")


def bf16() -> Cast:
    return Cast(torch.bfloat16, "bf16")

"""The codec contract, byte packing, and the traffic counter every strategy reports from.

A codec turns a flat float32 gradient into a *wire* tensor (what actually travels) and back:

* ``summable`` codecs (none, fp16, bf16) produce a tensor that several workers may add up element by
  element, so they ride on an all-reduce;
* the others (QSGD, top-k) produce a packed ``uint8`` message whose meaning depends on the sender;
  workers exchange them with an all-gather (or a point-to-point send) and each decodes all of them.

Codecs are small objects with explicit state (:meth:`Codec.state_dict`): a random stream for QSGD, the
error-feedback residual for top-k. The strategies save that state in checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import torch

Slots = Sequence[tuple[Hashable, int]]
"""How a flat tensor splits into named pieces (``(key, numel)`` in order): stateful codecs keep their
state per piece, so it survives a change of bucketing (DDP rebuilds its buckets after the first step)."""


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class Codec:
    """Identity: send the float32 values as they are."""

    name = "none"
    summable = True
    momentum = 0.0  # > 0: the codec applies SGD momentum itself (DGC), the optimizer must not

    def advance(self) -> None:
        """One training step is over (codecs with a schedule, e.g. top-k's sparsity warm-up)."""

    def encode(self, x: torch.Tensor, slots: Slots | None = None) -> torch.Tensor:
        return x

    def decode(self, wire: torch.Tensor, numel: int) -> torch.Tensor:
        return wire.float()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


# -- byte packing ------------------------------------------------------------------------------------
def pack_parts(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate tensors of any dtypes into one flat uint8 message."""
    return torch.cat([p.contiguous().reshape(-1).view(torch.uint8) for p in parts])


def unpack_parts(message: torch.Tensor, layout: Sequence[tuple[torch.dtype, int]]) -> list[torch.Tensor]:
    """Split a message made by :func:`pack_parts` back into ``(dtype, count)`` pieces."""
    out, offset = [], 0
    for dtype, count in layout:
        size = count * torch.empty((), dtype=dtype).element_size()
        out.append(message[offset : offset + size].view(dtype))
        offset += size
    if offset != message.numel():
        raise ValueError(f"message holds {message.numel()} bytes, the layout {offset}")
    return out


def packed_size(count: int, bits: int) -> int:
    return math.ceil(count * bits / 8)


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack ``codes`` (uint8, each < 2**bits) into ``ceil(n * bits / 8)`` bytes, least significant first."""
    shifts = torch.arange(bits, dtype=torch.uint8, device=codes.device)
    stream = ((codes.reshape(-1, 1) >> shifts) & 1).reshape(-1)
    stream = torch.nn.functional.pad(stream, (0, (-stream.numel()) % 8))
    weights = torch.arange(8, dtype=torch.int32, device=codes.device)
    return (stream.view(-1, 8).to(torch.int32) << weights).sum(1).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`."""
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    stream = ((packed.reshape(-1, 1) >> shifts) & 1).reshape(-1)[: count * bits]
    weights = torch.arange(bits, dtype=torch.int32, device=packed.device)
    return (stream.view(count, bits).to(torch.int32) << weights).sum(1).to(torch.uint8)


# -- what each worker sends -----------------------------------------------------------------------
class Traffic:
    """Bytes one worker sent, and what the same messages would have cost uncompressed (fp32).

    Collectives are counted with the bytes their algorithm puts on the wire per worker: a ring
    all-reduce of ``b`` bytes sends ``2(N-1)/N * b``, a ring all-gather of ``b`` bytes per worker sends
    ``(N-1) * b``. Point-to-point messages are counted exactly.
    """

    def __init__(self) -> None:
        self.wire = 0.0
        self.raw = 0.0
        self.steps = 0

    def add(self, wire: float, raw: float | None = None) -> None:
        self.wire += wire
        self.raw += wire if raw is None else raw

    def step(self) -> None:
        self.steps += 1

    def state_dict(self) -> dict[str, float]:
        return {"wire": self.wire, "raw": self.raw, "steps": self.steps}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.wire, self.raw, self.steps = float(state["wire"]), float(state["raw"]), int(state["steps"])

    def summary(self, ctx) -> dict[str, float]:
        """Mean over the workers of ``ctx`` (a collective: every worker calls it)."""
        wire, raw, steps, n = ctx.all_reduce_sum([self.wire, self.raw, float(self.steps), 1.0])
        per_step = wire / steps if steps else 0.0
        return {
            "bytes_sent_per_worker_step": per_step,
            "compression_ratio": raw / wire if wire else 1.0,
        }

"""Top-k sparsification: send only the ``k`` largest-magnitude values and their positions.

Keeping ``k = ceil(ratio * n)`` of ``n`` values sends ``8k`` bytes (float32 value + int32 index), so
``ratio = 1%`` is 50x fewer bytes than float32. On its own top-k is biased (small coordinates are
never sent); it is meant to run inside :class:`~escala.parallel.data.codecs.feedback.ErrorFeedback`,
which carries what was not sent into the next step (Stich et al. 2018, "Sparsified SGD with Memory";
Lin et al. 2018, "Deep Gradient Compression"). ``make_codec('topk')`` builds exactly that pair.
"""

from __future__ import annotations

import math

import torch

from escala.errors import UserError
from escala.parallel.data.codecs.base import Codec, Slots, pack_parts, unpack_parts


class TopK(Codec):
    name = "topk"
    summable = False

    def __init__(self, ratio: float = 0.01):
        if not 0.0 < ratio <= 1.0:
            raise UserError(f"field 'topk_ratio' must be in (0, 1], got {ratio}")
        self.ratio = ratio

    def k(self, n: int) -> int:
        return max(1, min(n, math.ceil(self.ratio * n)))

    def encode(self, x: torch.Tensor, slots: Slots | None = None) -> torch.Tensor:
        flat = x.detach().float().reshape(-1)
        idx = flat.abs().topk(self.k(flat.numel()), sorted=False).indices
        return pack_parts([flat[idx], idx.to(torch.int32)])

    def decode(self, wire: torch.Tensor, numel: int) -> torch.Tensor:
        k = self.k(numel)
        values, idx = unpack_parts(wire, [(torch.float32, k), (torch.int32, k)])
        out = torch.zeros(numel, dtype=torch.float32, device=wire.device)
        out[idx.long()] = values
        return out

"""Top-k sparsification: send only the ``k`` largest-magnitude values and their positions.

Keeping ``k = ceil(ratio * n)`` of ``n`` values sends ``8k`` bytes (float32 value + int32 index), so
``ratio = 1%`` is 50x fewer bytes than float32. On its own top-k is biased (small coordinates are
never sent); it is meant to run inside :class:`~escala.parallel.data.codecs.feedback.ErrorFeedback`,
which carries what was not sent into the next step (Stich et al. 2018, "Sparsified SGD with Memory";
Lin et al. 2018, "Deep Gradient Compression"). ``make_codec('topk')`` builds exactly that pair.

**Sparsity warm-up** (Lin et al. 2018, Sec. 3.3): early in training the gradients change fast, and
sending 1% of them delays too much of each one. With ``warmup_steps = T`` the sent fraction starts at
25% and shrinks 4x per stage until it reaches ``ratio``, over ``T`` steps cut into equal stages:

    stages = ceil(log_4(0.25 / ratio)),   ratio_t = max(ratio, 0.25 * 4^-floor(t * stages / T))

(for 1%: 25% -> 6.25% -> 1.5625% -> 1%, the paper's schedule).

**Per slot** (``per_slot``, the default): when the caller names the pieces of the tensor (one per
parameter under DDP), each piece sends its own ``ceil(ratio * n_i)`` largest values, as DGC selects a
threshold per layer, so small tensors (biases, the last layer) are not starved by large ones. The step count is codec state
(checkpointed); a message carries its own ``k`` (its size is ``8k`` bytes), so a receiver decodes it
whatever stage the sender was in.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from escala.errors import UserError
from escala.parallel.data.codecs.base import Codec, Slots, pack_parts, unpack_parts

WARMUP_START = 0.25  # the sent fraction at the first step of the warm-up
WARMUP_FACTOR = 4.0  # each stage sends this many times fewer values than the one before


class TopK(Codec):
    name = "topk"
    summable = False

    def __init__(self, ratio: float = 0.01, warmup_steps: int = 0, per_slot: bool = True):
        if not 0.0 < ratio <= 1.0:
            raise UserError(f"field 'topk_ratio' must be in (0, 1], got {ratio}")
        if warmup_steps < 0:
            raise UserError(f"field 'topk_warmup_steps' must be >= 0, got {warmup_steps}")
        self.target = ratio
        self.warmup_steps = warmup_steps
        self.per_slot = per_slot
        self.steps = 0  # steps finished (advance() calls)

    @property
    def ratio(self) -> float:
        """The fraction sent at the current step (the warm-up schedule, then the target)."""
        if self.steps >= self.warmup_steps or self.target >= WARMUP_START:
            return self.target
        stages = math.ceil(math.log(WARMUP_START / self.target, WARMUP_FACTOR))
        stage = self.steps * stages // self.warmup_steps
        return max(self.target, WARMUP_START * WARMUP_FACTOR ** (-stage))

    def k(self, n: int) -> int:
        return max(1, min(n, math.ceil(self.ratio * n)))

    def encode(self, x: torch.Tensor, slots: Slots | None = None) -> torch.Tensor:
        flat = x.detach().float().reshape(-1)
        if not self.per_slot or not slots or len(slots) == 1:
            idx = flat.abs().topk(self.k(flat.numel()), sorted=False).indices
        else:  # per slot (layer), as DGC does: every tensor sends its own top fraction
            picked, offset = [], 0
            for _, n in slots:
                part = flat[offset : offset + n].abs()
                picked.append(part.topk(self.k(n), sorted=False).indices + offset)
                offset += n
            idx = torch.cat(picked)
        return pack_parts([flat[idx], idx.to(torch.int32)])

    def decode(self, wire: torch.Tensor, numel: int) -> torch.Tensor:
        k = wire.numel() // 8  # float32 value + int32 index per kept value
        values, idx = unpack_parts(wire, [(torch.float32, k), (torch.int32, k)])
        out = torch.zeros(numel, dtype=torch.float32, device=wire.device)
        out[idx.long()] = values
        return out

    def advance(self) -> None:
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state.get("steps", 0))

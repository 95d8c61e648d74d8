"""Error feedback: whatever a lossy codec did not send is added to the next gradient.

With residual ``e_t`` (zero at the start) and gradient ``g_t``:

    a_t = g_t + e_t,    sent_t = D(E(a_t)),    e_{t+1} = a_t - sent_t

so nothing is ever lost, only delayed: ``sum_t sent_t + e_T = sum_t g_t`` (Seide et al. 2014, "1-bit
SGD"; Karimireddy et al. 2019, "Error Feedback Fixes SignSGD"). The residual is the codec's state; it
is kept per named slot (a parameter, a server shard) so it survives re-bucketing and is checkpointed.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import torch

from escala.parallel.data.codecs.base import Codec, Slots


class ErrorFeedback(Codec):
    def __init__(self, inner: Codec):
        self.inner = inner
        self.name = inner.name
        self.summable = inner.summable
        self.residual: dict[Hashable, torch.Tensor] = {}

    def encode(self, x: torch.Tensor, slots: Slots | None = None) -> torch.Tensor:
        flat = x.detach().float().reshape(-1)
        slots = list(slots) if slots else [("all", flat.numel())]
        if sum(n for _, n in slots) != flat.numel():
            raise ValueError("slots do not cover the tensor")
        carried = [self.residual.get(key) for key, _ in slots]
        acc = flat + torch.cat(
            [
                r.to(flat.device) if r is not None and r.numel() == n else torch.zeros(n, device=flat.device)
                for r, (_, n) in zip(carried, slots)
            ]
        )
        wire = self.inner.encode(acc)
        left = acc - self.inner.decode(wire, acc.numel())
        for (key, _), part in zip(slots, left.split([n for _, n in slots])):
            self.residual[key] = part.clone()
        return wire

    def decode(self, wire: torch.Tensor, numel: int) -> torch.Tensor:
        return self.inner.decode(wire, numel)

    def state_dict(self) -> dict[str, Any]:
        return {"residual": {k: v.cpu() for k, v in self.residual.items()}, "inner": self.inner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.residual = {k: v.clone() for k, v in state.get("residual", {}).items()}
        self.inner.load_state_dict(state.get("inner", {}))

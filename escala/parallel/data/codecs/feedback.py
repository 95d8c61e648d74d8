"""Error feedback, and momentum correction for it: whatever a lossy codec did not send is added to
the next gradient.

Plain error feedback, with residual ``e_t`` (zero at the start) and gradient ``g_t``:

    a_t = g_t + e_t,    sent_t = D(E(a_t)),    e_{t+1} = a_t - sent_t

so nothing is ever lost, only delayed: ``sum_t sent_t + e_T = sum_t g_t`` (Seide et al. 2014, "1-bit
SGD"; Karimireddy et al. 2019, "Error Feedback Fixes SignSGD").

With momentum SGD that is not enough: the optimizer's momentum then acts on the *sent* sparse
gradients, so a coordinate held back for many steps arrives as one large value and is amplified by
``1/(1-m)`` afterwards. **Momentum correction** (Lin et al. 2018, "Deep Gradient Compression", Sec.
3.2) keeps the velocity on the worker and compresses the velocity instead:

    u_t = m u_{t-1} + g_t,    a_t = u_t + e_t,    sent_t = D(E(a_t)),    e_{t+1} = a_t - sent_t

and the parameters take the plain step ``w <- w - lr * mean_workers(sent_t)`` (the optimizer runs
without momentum: :func:`without_momentum`). With nothing dropped (ratio 1) it is exactly momentum
SGD; here ``sum_t sent_t + e_T = sum_t u_t``. **Momentum factor masking** (Sec. 3.3) then zeroes
``u`` where a value was sent, so a coordinate's old velocity does not keep pushing it after its
accumulated update has gone out (stale momentum).

The residual (and velocity) is the codec's state, kept per named slot (a parameter, a server shard)
so it survives re-bucketing, and checkpointed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator
from typing import Any

import torch

from escala.errors import UserError
from escala.parallel.data.codecs.base import Codec, Slots

State = dict[Hashable, torch.Tensor]


def _gather(store: State, slots: list, device: torch.device) -> torch.Tensor:
    return torch.cat(
        [
            r.to(device) if (r := store.get(key)) is not None and r.numel() == n else torch.zeros(n, device=device)
            for key, n in slots
        ]
    )


def _scatter(store: State, slots: list, flat: torch.Tensor) -> None:
    for (key, _), part in zip(slots, flat.split([n for _, n in slots])):
        store[key] = part.clone()


class ErrorFeedback(Codec):
    def __init__(self, inner: Codec, momentum: float = 0.0, masking: bool = True):
        if not 0.0 <= momentum < 1.0:
            raise UserError(f"field 'momentum' must be below 1 for top-k momentum correction, got {momentum}")
        self.inner = inner
        self.name = inner.name
        self.summable = inner.summable
        self.momentum = momentum
        self.masking = masking
        self.residual: State = {}
        self.velocity: State = {}

    def encode(self, x: torch.Tensor, slots: Slots | None = None) -> torch.Tensor:
        flat = x.detach().float().reshape(-1)
        slots = list(slots) if slots else [("all", flat.numel())]
        if sum(n for _, n in slots) != flat.numel():
            raise ValueError("slots do not cover the tensor")
        if self.momentum:
            flat = self.momentum * _gather(self.velocity, slots, flat.device) + flat
        acc = flat + _gather(self.residual, slots, flat.device)
        wire = self.inner.encode(acc, slots)
        sent = self.inner.decode(wire, acc.numel())
        _scatter(self.residual, slots, acc - sent)
        if self.momentum:
            if self.masking:
                flat = flat.masked_fill(sent != 0, 0.0)
            _scatter(self.velocity, slots, flat)
        return wire

    def decode(self, wire: torch.Tensor, numel: int) -> torch.Tensor:
        return self.inner.decode(wire, numel)

    def advance(self) -> None:
        self.inner.advance()

    def state_dict(self) -> dict[str, Any]:
        state = {"residual": {k: v.cpu() for k, v in self.residual.items()}, "inner": self.inner.state_dict()}
        if self.momentum:
            state["velocity"] = {k: v.cpu() for k, v in self.velocity.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.residual = {k: v.clone() for k, v in state.get("residual", {}).items()}
        self.velocity = {k: v.clone() for k, v in state.get("velocity", {}).items()}
        self.inner.load_state_dict(state.get("inner", {}))


@contextlib.contextmanager
def without_momentum(optimizer: torch.optim.Optimizer, codec: Codec | None) -> Iterator[None]:
    """Step ``optimizer`` with its momentum off while ``codec`` applies momentum itself (momentum
    correction); the configured momentum stays in ``param_groups`` (and checkpoints) otherwise."""
    if codec is None or not codec.momentum:
        yield
        return
    saved = [g.get("momentum", 0.0) for g in optimizer.param_groups]
    for g in optimizer.param_groups:
        g["momentum"] = 0.0
    try:
        yield
    finally:
        for g, m in zip(optimizer.param_groups, saved):
            g["momentum"] = m

"""Weight updates in a low-precision format, plain or Kahan-compensated.

Storing weights in a format with ``p`` significant bits loses every update smaller than half a
unit in the last place of the weight: ``w + dw`` rounds back to ``w``. Kahan summation (Kahan,
"Further remarks on reducing truncation errors", CACM 1965) keeps the part of each update that
rounding threw away in a compensation buffer ``c`` and adds it back next time::

    c <- c + dw                  (the update plus what earlier steps lost)
    w' <- w (+) c                (format addition: rounded)
    c <- c - (w' - w)            (what this rounding lost)

Zamirai, Zhang, Aberger and De Sa, "Revisiting BFloat16 Training" (2020) show that this, with ``c``
stored in the same 16-bit format, lets pure-bf16 training match fp32; optimi's Kahan optimizers do the
same. :class:`KahanUpdates` attaches to any ``torch.optim.Optimizer`` through its step hooks, so the
optimizer (and the trainer's LR scheduler and checkpoints of it) stay untouched: the pre-hook
remembers ``w`` (and rounds the gradients to the format), the optimizer computes its update in
float32, and the post-hook applies that update ``dw = w_fp32 - w`` in the format. With
``kahan=False`` the update is simply rounded, the baseline that loses small steps; with
``stochastic=True`` the rounding is stochastic (unbiased), the other known remedy. The buffers are
state (``state_dict``/``load_state_dict``) checkpointed with the run.
"""

from __future__ import annotations

from typing import Any

import torch

from escala.precision.formats.base import Format


class KahanUpdates:
    """Apply ``optimizer``'s updates to weights stored in ``fmt``, with optional Kahan compensation.

    Args:
        optimizer: any torch optimizer; its parameters must already be on ``fmt``'s grid.
        fmt: the weight format.
        kahan: keep a per-parameter compensation buffer (stored in ``fmt`` too when
            ``compensation_in_format``, as in Zamirai et al.; float32 otherwise).
        stochastic: round gradients and updates stochastically instead of to nearest.
        round_grads: round each gradient to ``fmt`` before the optimizer sees it.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        fmt: Format,
        *,
        kahan: bool = True,
        stochastic: bool = False,
        round_grads: bool = True,
        compensation_in_format: bool = True,
    ) -> None:
        self.optimizer, self.fmt = optimizer, fmt
        self.kahan, self.stochastic, self.round_grads = kahan, stochastic, round_grads
        self.compensation_in_format = compensation_in_format
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.compensation: list[torch.Tensor | None] = [None] * len(self.params)
        self._before: list[torch.Tensor | None] = [None] * len(self.params)
        self.lost_updates = 0  # elements whose rounded update was zero while the true one was not
        self._handles = [
            optimizer.register_step_pre_hook(self._pre_step),
            optimizer.register_step_post_hook(self._post_step),
        ]

    @torch.no_grad()
    def _pre_step(self, optimizer, args, kwargs):
        for i, p in enumerate(self.params):
            if p.grad is None:
                self._before[i] = None
                continue
            if self.round_grads:
                p.grad.copy_(self.fmt.quantize(p.grad, self.stochastic))
            self._before[i] = p.detach().clone()

    @torch.no_grad()
    def _post_step(self, optimizer, args, kwargs):
        fmt, sr = self.fmt, self.stochastic
        for i, p in enumerate(self.params):
            old = self._before[i]
            if old is None:
                continue
            self._before[i] = None
            delta = p.detach() - old  # the optimizer's update, computed in float32
            if not self.kahan:
                new = fmt.add(old, fmt.quantize(delta, sr), sr)
            else:
                c = self.compensation[i]
                c = delta if c is None else c + delta
                c = fmt.quantize(c, sr) if self.compensation_in_format else c
                new = fmt.add(old, fmt.quantize(c, sr), sr)
                c = c - (new - old)
                self.compensation[i] = fmt.quantize(c) if self.compensation_in_format else c
            self.lost_updates += int(((new == old) & (delta != 0)).sum())
            p.copy_(new)

    def state_dict(self) -> dict[str, Any]:
        return {
            "compensation": [None if c is None else c.clone() for c in self.compensation],
            "lost_updates": self.lost_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        comps = state.get("compensation", [])
        if comps and len(comps) != len(self.params):
            raise ValueError(f"Kahan state has {len(comps)} buffers, the optimizer {len(self.params)} params")
        for i, c in enumerate(comps):
            self.compensation[i] = None if c is None else c.to(self.params[i].device)
        self.lost_updates = int(state.get("lost_updates", 0))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

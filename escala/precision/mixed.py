"""Precision of a training run: autocast (bf16/fp16), dynamic loss scaling, simulated formats.

:class:`Precision` is what the one training loop calls; with the default configuration (fp32, no
simulation) every method is a plain pass-through, so the default path is unchanged.

* ``precision="bf16"``/``"fp16"``: the forward pass and the loss run under ``torch.autocast``
  (Micikevicius et al., "Mixed precision training", ICLR 2018): matmuls and convolutions in 16 bits,
  reductions and the loss in float32, weights and optimizer state kept in float32 ("master weights").
* ``fp16`` adds dynamic loss scaling with ``torch.amp.GradScaler``: the loss is multiplied by a
  scale ``S`` so small gradients do not underflow fp16; gradients are unscaled before the step; if any
  is inf/NaN the step is skipped and ``S`` halved, and after 2000 clean steps ``S`` doubles. The
  inf check runs here (not inside ``GradScaler.step``) so the strategy's ``optimizer_step`` is still
  the one that applies the update. bf16 has fp32's exponent range and needs no scaling.
* ``simulate=FORMAT``: :func:`~escala.precision.simulate.simulate_model` on the model and, with
  ``simulate_scope="all"``, :class:`~escala.precision.kahan.KahanUpdates` (plain or compensated)
  on the optimizer. Simulation runs in float32 and cannot be combined with autocast.

This CPU build has no native bf16/fp16 arithmetic units: autocast on CPU is correct but slower than
float32 (see ``escala bench precision``); the speed-up is a GPU matter.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from escala.errors import UserError
from escala.precision.formats import make_format
from escala.precision.kahan import KahanUpdates
from escala.precision.simulate import simulate_model

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def format_from_config(config):
    """The simulated :class:`~escala.precision.formats.base.Format` a config asks for, or None."""
    if config.simulate == "none":
        return None
    return make_format(
        config.simulate,
        fixed_int_bits=config.fixed_int_bits,
        fixed_frac_bits=config.fixed_frac_bits,
        lns_int_bits=config.lns_int_bits,
        lns_frac_bits=config.lns_frac_bits,
        lns_add=config.lns_add,
    )


class Precision:
    """Autocast, loss scaling and simulated formats for one worker's training loop."""

    def __init__(self, config, device: torch.device) -> None:
        self.mode = config.precision
        self.device = torch.device(device)
        if self.mode not in ("fp32", "bf16", "fp16"):
            raise UserError(f"precision {self.mode!r} is unknown; choose fp32, bf16 or fp16")
        self.format = format_from_config(config)
        self.scope = config.simulate_scope
        self.kahan = bool(config.kahan)
        self.stochastic = bool(config.stochastic_rounding)
        if self.format is not None and self.mode != "fp32":
            raise UserError(
                f"--simulate {config.simulate} needs --precision fp32 (the simulation rounds float32 "
                f"values itself), not {self.mode}"
            )
        if self.format is None and (self.kahan or self.stochastic):
            raise UserError(
                "--kahan and --stochastic-rounding apply to simulated weights: add --simulate FORMAT"
            )
        if self.kahan and self.scope != "all":
            raise UserError("--kahan compensates weight updates, which only --simulate-scope all rounds")
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.mode == "fp16")
        self.updates: KahanUpdates | None = None
        self.simulation = None
        self.skipped_steps = 0

    @property
    def active(self) -> bool:
        return self.mode != "fp32" or self.format is not None

    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Apply the simulated format to ``model`` (in place) and ``optimizer`` (step hooks)."""
        if self.format is None:
            return
        self.simulation = simulate_model(model, self.format, self.scope, self.stochastic)
        if self.scope == "all":
            self.updates = KahanUpdates(optimizer, self.format, kahan=self.kahan, stochastic=self.stochastic)

    def autocast(self):
        """Context for the forward pass and loss."""
        if self.mode == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.mode])

    def backward(self, loss: torch.Tensor) -> None:
        if self.scaler.is_enabled():
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def step(self, optimizer: torch.optim.Optimizer, strategy) -> bool:
        """Apply the update through ``strategy``; with loss scaling skip it on inf/NaN. True if taken."""
        if not self.scaler.is_enabled():
            strategy.optimizer_step(optimizer)
            return True
        self.scaler.unscale_(optimizer)
        finite = all(
            bool(torch.isfinite(p.grad).all())
            for group in optimizer.param_groups
            for p in group["params"]
            if p.grad is not None
        )
        if finite:
            strategy.optimizer_step(optimizer)
        else:
            self.skipped_steps += 1
        self.scaler.update()  # halves the scale after an inf, grows it after enough clean steps
        return finite

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"skipped_steps": self.skipped_steps}
        if self.scaler.is_enabled():
            state["scaler"] = self.scaler.state_dict()
        if self.updates is not None:
            state["updates"] = self.updates.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if not state:
            return
        self.skipped_steps = int(state.get("skipped_steps", 0))
        if self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.updates is not None and state.get("updates"):
            self.updates.load_state_dict(state["updates"])

    def summary(self) -> dict[str, Any]:
        if not self.active:
            return {"precision": self.mode}
        out: dict[str, Any] = {"precision": self.mode}
        if self.scaler.is_enabled():
            out["skipped_steps"] = self.skipped_steps
            out["loss_scale"] = float(self.scaler.get_scale())
        if self.format is not None:
            out["simulate"] = self.format.describe()["format"]
            out["simulate_scope"] = self.scope
            out["kahan"] = self.kahan
            out["stochastic_rounding"] = self.stochastic
        if self.updates is not None:
            out["lost_updates"] = self.updates.lost_updates
        return out

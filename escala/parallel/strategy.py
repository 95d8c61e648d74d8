"""The contract between the one training loop and a way of parallelising it.

The :class:`~escala.train.trainer.Trainer` owns the loop (batches, forward, loss, backward, schedule,
evaluation, checkpoints, metrics). A strategy only wraps what the loop touches:

* :meth:`Strategy.setup` wraps the model (e.g. in DistributedDataParallel) and sees the optimizer;
* :meth:`Strategy.optimizer_step` applies the gradients (plain ``optimizer.step()`` by default; a
  parameter server pushes and pulls instead);
* :meth:`Strategy.after_step` runs after each step (e.g. periodic model averaging);
* :meth:`Strategy.state_dict` / :meth:`Strategy.load_state_dict` checkpoint its own state (codec
  residuals, counters);
* :meth:`Strategy.summary` adds its figures to ``summary.json`` (bytes sent, staleness...).

Model code never mentions ranks; a strategy never owns the loop.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from escala.runtime.context import WorkerContext


class Strategy:
    """Single-process training: every hook is the identity. Subclasses override what they need."""

    name = "single"

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer, ctx: WorkerContext) -> nn.Module:
        """Return the module the loop should call for training forward passes."""
        self.ctx = ctx
        return model

    def unwrap(self, model: nn.Module) -> nn.Module:
        """The plain model (for evaluation and checkpoints)."""
        return model

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.step()

    def after_step(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def summary(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass

"""The contract between the one training loop and a way of parallelising it.

The :class:`~escala.train.trainer.Trainer` owns the loop (batches, forward, loss, backward, schedule,
evaluation, checkpoints, metrics). A strategy only wraps what the loop touches:

* :meth:`Strategy.setup` wraps the model (e.g. in DistributedDataParallel) and sees the optimizer;
* :meth:`Strategy.optimizer_step` applies the gradients (plain ``optimizer.step()`` by default; a
  parameter server pushes and pulls instead);
* :meth:`Strategy.after_step` runs after each step (e.g. periodic model averaging);
* :meth:`Strategy.synchronize` settles in-flight communication before the loop's collectives, and
  :meth:`Strategy.steps_to_skip` lets a worker the others moved past skip those steps (backup workers);
* :meth:`Strategy.servers` and :meth:`Strategy.assign_role` let a strategy start extra processes
  that serve instead of train (parameter servers); ``shares_model`` keeps spawned workers on the
  parent's weights in shared memory (Hogwild);
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
    shares_model = False  # True: spawned workers train the parent's weights in shared memory (Hogwild)

    def __init__(self, config=None):
        self.config = config

    @classmethod
    def check(cls, config) -> None:
        """Reject settings this strategy cannot run (a :class:`~escala.errors.UserError`), before any
        process starts."""

    @classmethod
    def servers(cls, config) -> int:
        """Processes the job needs besides the ``config.workers`` training workers (parameter servers)."""
        return 0

    def assign_role(self, ctx: WorkerContext, model: nn.Module) -> WorkerContext | None:
        """The context the training loop runs in on this process, or None when this process served the
        workers instead (a parameter server) and is done."""
        return ctx

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

    def synchronize(self, model: nn.Module) -> None:
        """Called on every worker before the loop's collectives (evaluation, checkpoint, the end):
        settle in-flight communication so that the replicas agree."""

    def steps_to_skip(self) -> int:
        """Steps the other workers took without this one (a dropped backup worker catching up); the loop
        advances over them without computing."""
        return 0

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def summary(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass

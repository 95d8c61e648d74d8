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

Model parallelism (a model split over processes, :mod:`escala.parallel.model`) needs a few more:

* :meth:`Strategy.data_rank_world` says which data-parallel replica this process belongs to (all
  processes of one replica read the same batch); :meth:`Strategy.processes` how many processes the
  job needs;
* :meth:`Strategy.split_model` keeps this process's part of the model before the optimizer is built;
* ``owns_step`` with :meth:`Strategy.forward_backward` lets a strategy run forward and backward
  itself (a pipeline computes the loss on its last stage only), ``reports_metrics`` says whether
  this process's loss and predictions count in the metrics, and :meth:`Strategy.eval_forward`
  evaluates a batch;
* :meth:`Strategy.full_state_dict` gathers the whole model for checkpoints, and
  :meth:`Strategy.optimizer_state` / :meth:`Strategy.load_optimizer_state` make a per-process
  optimizer state picklable (``per_rank_optimizer``).

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
    owns_step = False  # True: forward_backward replaces the loop's forward, loss and backward
    reports_metrics = True  # False: this process's loss/predictions duplicate another's (model parallel)
    per_rank_optimizer = False  # True: every process's optimizer state differs and is checkpointed
    eval_batch_size: int | None = None  # a fixed evaluation batch (a pipeline's shapes are fixed)

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

    @classmethod
    def processes(cls, config) -> int:
        """Processes the whole job needs."""
        return config.workers + cls.servers(config)

    @classmethod
    def check_model(cls, config, model: nn.Module, input_shape: tuple[int, ...]) -> None:
        """Reject a model this strategy cannot run (a :class:`~escala.errors.UserError`), in the
        launching process before any worker starts."""

    def data_rank_world(self, ctx: WorkerContext) -> tuple[int, int]:
        """(replica index, number of replicas): how the training batches are sharded."""
        return ctx.rank, ctx.world_size

    def eval_rank_world(self, ctx: WorkerContext) -> tuple[int, int]:
        """How the validation set is sharded (the replicas by default)."""
        return self.data_rank_world(ctx)

    def split_model(self, model: nn.Module, ctx: WorkerContext, sample: torch.Tensor) -> nn.Module:
        """This process's part of ``model`` (the whole model unless the model is split);
        ``sample`` is one training batch of inputs, for shapes and timing."""
        return model

    def forward_backward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch, scale: float):
        """With ``owns_step``: forward and backward of one batch, the loss being ``scale`` times the
        sum of the per-sample losses; returns that unscaled sum where this process knows it, else None."""
        raise NotImplementedError

    def eval_forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        """The model's output on a validation batch, or None where this process does not report it."""
        return model(x)

    def full_state_dict(self, model: nn.Module) -> dict[str, Any]:
        """The whole model's state dict, with the unsplit model's keys (collective: every process
        calls it; only the main process's result is used)."""
        return self.unwrap(model).state_dict()

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return optimizer.state_dict()

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        optimizer.load_state_dict(state)

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

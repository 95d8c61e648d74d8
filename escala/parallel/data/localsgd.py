"""Local SGD: periodic model averaging (Su & Chen 2015, "Experiments on Parallel Training of Deep
Neural Network using Model Averaging"; Lin et al. 2020, "Don't Use Large Mini-Batches, Use Local SGD").

Each worker takes ``H`` (``--average-every``) optimizer steps on its own shard with no communication,
then the parameters are averaged over all workers with one all-reduce:

    x_r <- x_r - lr * g_r(x_r)           (every step, on each worker r)
    x_r <- (1/N) sum_r' x_r'             (every H steps)

With plain or momentum SGD the update is linear in the gradient, so averaging after every step (H=1)
gives exactly the parameters of synchronous SGD on the global batch; larger H trades some accuracy per
step for 1/H of the communication. ``--average-optimizer`` also averages the optimizer state
(momentum, Adam moments). The averaging itself is PyTorch's
``torch.distributed.algorithms.model_averaging.utils.average_parameters`` (one flat all-reduce).

Parameters are also averaged before every evaluation and checkpoint (the trainer's ``synchronize``),
so the model that is evaluated and saved is the one all workers agree on.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.algorithms.model_averaging.utils import average_parameters

from escala.errors import UserError
from escala.parallel.data.codecs import Traffic, nbytes
from escala.parallel.data.straggler import Straggler, check_straggler
from escala.parallel.strategy import Strategy
from escala.runtime.context import WorkerContext


class LocalSGD(Strategy):
    name = "localsgd"

    @classmethod
    def check(cls, config) -> None:
        check_straggler(config)
        if config.compress != "none":
            raise UserError(
                "field 'compress' works with strategies allreduce, backup and paramserver, not localsgd"
            )

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer, ctx: WorkerContext) -> nn.Module:
        self.ctx = ctx
        self.model = model
        self.optimizer = optimizer
        self.every = self.config.average_every
        self.traffic = getattr(self, "traffic", None) or Traffic()
        self.straggler = Straggler.from_config(self.config, ctx.rank, ctx.world_size)
        self.since_average = getattr(self, "since_average", 0)
        self.averages = getattr(self, "averages", 0)
        return model

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.straggler.wait(self.traffic.steps)
        optimizer.step()

    def after_step(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.traffic.step()
        self.since_average += 1
        if self.since_average >= self.every:
            self._average()

    def synchronize(self, model: nn.Module) -> None:
        if self.since_average:
            self._average()

    def _tensors(self) -> list[torch.Tensor]:
        tensors = [p for p in self.model.parameters()]
        tensors += [b for b in self.model.buffers() if b.is_floating_point()]  # e.g. BatchNorm statistics
        if self.config.average_optimizer:
            for state in self.optimizer.state.values():
                tensors += [v for k, v in state.items() if k != "step" and torch.is_tensor(v) and v.dim() > 0]
        return tensors

    @torch.no_grad()
    def _average(self) -> None:
        self.since_average = 0
        if not self.ctx.distributed:
            return
        tensors = self._tensors()
        average_parameters(iter(tensors), None)
        n = self.ctx.world_size
        self.traffic.add(2 * (n - 1) / n * sum(nbytes(t) for t in tensors))
        self.averages += 1

    def state_dict(self) -> dict[str, Any]:
        return {"traffic": self.traffic.state_dict(), "averages": self.averages}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.traffic = Traffic()
        self.traffic.load_state_dict(state["traffic"])
        self.averages = int(state.get("averages", 0))

    def summary(self) -> dict[str, Any]:
        averages = self.ctx.all_reduce_sum([float(self.averages)])[0] / max(self.ctx.world_size, 1)
        return {**self.traffic.summary(self.ctx), "averages": averages, "average_every": self.every}

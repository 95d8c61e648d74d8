"""Hogwild: lock-free asynchronous SGD on one model in shared memory (Recht, Re, Wright & Niu 2011,
"HOGWILD!: A Lock-Free Approach to Parallelizing Stochastic Gradient Descent").

N processes on one machine hold the *same* parameter storage (``torch.multiprocessing`` moves the
launcher's tensors into shared memory when it spawns the workers, and this strategy keeps them there
instead of giving each worker a private copy). Each process runs the ordinary loop on its shard of the
data and applies its own optimizer step straight to the shared weights, without locks:

    x <- x - lr * g_r(x_read)      (on every process r, whenever it is ready)

Reads and writes interleave freely, so a gradient may be computed on weights other processes are
changing; with sparse enough updates the paper proves convergence at nearly linear speed-up. Each
process keeps its own optimizer state (momentum), as in PyTorch's MNIST Hogwild example. Nothing
is sent over the network; processes meet only at epoch ends (evaluation, checkpoints).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from escala.errors import UserError
from escala.parallel.data.straggler import Straggler, check_straggler
from escala.parallel.strategy import Strategy
from escala.runtime import under_torchrun
from escala.runtime.context import WorkerContext


class Hogwild(Strategy):
    name = "hogwild"
    shares_model = True

    @classmethod
    def check(cls, config) -> None:
        check_straggler(config)
        if config.compress != "none":
            raise UserError("field 'compress' does not apply to hogwild: nothing is sent, memory is shared")
        if config.device == "cuda":
            raise UserError("strategy 'hogwild' shares CPU memory between processes; use device cpu")
        if under_torchrun():
            raise UserError(
                "strategy 'hogwild' needs one machine's shared memory: run `escala train --workers N`, "
                "not torchrun"
            )

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer, ctx: WorkerContext) -> nn.Module:
        self.ctx = ctx
        if ctx.device.type != "cpu":
            raise UserError("strategy 'hogwild' shares CPU memory between processes; use device cpu")
        if ctx.distributed and not all(p.is_shared() for p in model.parameters()):
            raise UserError("strategy 'hogwild' needs the model's parameters in shared memory")
        self.straggler = Straggler.from_config(self.config, ctx.rank, ctx.world_size)
        self.steps = getattr(self, "steps", 0)
        self.dirty = False
        return model

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.straggler.wait(self.steps)
        optimizer.step()  # in place on the shared storage, no lock
        self.steps += 1
        self.dirty = True

    def synchronize(self, model: nn.Module) -> None:
        # Evaluate and save once every process has finished its share of the epoch.
        if self.dirty:
            self.ctx.barrier()
            self.dirty = False

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state.get("steps", 0))

    def summary(self) -> dict[str, Any]:
        updates = self.ctx.all_reduce_sum([float(self.steps)])[0]
        return {"bytes_sent_per_worker_step": 0.0, "updates": int(updates)}

"""``escala train --spatial P``: the one training loop with convolutions split by rows.

Each of the P processes of a replica computes its band of rows of every convolution and pooling
layer at the front of the model, with halo exchanges (:class:`escala.parallel.model.spatial.
SpatialParallel`, Dryden et al. 2019); the rest of the model runs replicated after a gather. The
weights are replicated, so after the backward pass the split layers' gradients are summed over the
band processes, then averaged over the replicas. Evaluation needs no communication: every process
holds the whole model, so the validation set is sharded over all processes.
"""

from __future__ import annotations

import torch
from torch import nn

from escala.errors import UserError
from escala.parallel.model.spatial import SpatialParallel
from escala.parallel.model.strategies.base import ModelParallel, average_gradients
from escala.runtime.context import WorkerContext


class SpatialSplit(ModelParallel):
    name = "spatial"
    per_rank_optimizer = False  # weights and their updates are the same on every process

    @classmethod
    def check_model(cls, config, model: nn.Module, input_shape: tuple[int, ...]) -> None:
        children = list(model.children()) if isinstance(model, nn.Sequential) else []
        if not children or not isinstance(children[0], (nn.Conv2d, nn.MaxPool2d)):
            raise UserError(
                f"--spatial {config.spatial}: model {config.model} does not start with a convolution; use lenet5"
            )
        if len(input_shape) != 3 or input_shape[1] < config.spatial:
            raise UserError(
                f"--spatial {config.spatial}: inputs of shape {tuple(input_shape)} have fewer rows than parts"
            )

    def split_model(self, model: nn.Module, ctx: WorkerContext, sample: torch.Tensor) -> nn.Module:
        self._make_groups(ctx)
        self.input_shape = tuple(sample.shape[1:])
        return model

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer, ctx: WorkerContext) -> nn.Module:
        super().setup(model, optimizer, ctx)
        self.wrapper = SpatialParallel(model, self.input_shape, group=self.model_group)
        return self.wrapper

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model.model if isinstance(model, SpatialParallel) else model

    def eval_rank_world(self, ctx: WorkerContext) -> tuple[int, int]:
        return ctx.rank, ctx.world_size

    @property
    def reports_metrics(self) -> bool:  # training loss: every band process computes the same one
        return getattr(self, "part", 0) == 0

    def eval_forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        return model(x)  # the whole replicated model, on this process's share of the validation set

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.wrapper.sync_gradients()
        if self.layout.replicas > 1:
            average_gradients(self.local_params, self.data_group, self.layout.replicas)
        optimizer.step()

"""``escala train --tensor T``: the one training loop on Megatron-style tensor-parallel layers.

The Linear pairs of the model are split column/row-wise over the T processes of each replica
(:func:`escala.parallel.model.tensor.tensor_parallel`, PyTorch's DTensor API) on a 2-D device mesh
``(replicas, T)``: the ``"tensor"`` dimension carries the activation all-reduces, the ``"data"``
dimension averages gradients over the replicas. Every process of a replica computes the same
loss, so only the first one reports it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

from escala.errors import UserError
from escala.parallel.model.strategies.base import ModelParallel
from escala.parallel.model.tensor import linear_pairs, tensor_parallel
from escala.runtime.context import WorkerContext


class TensorParallel(ModelParallel):
    name = "tensor"

    @classmethod
    def check_model(cls, config, model: nn.Module, input_shape: tuple[int, ...]) -> None:
        pairs, _ = linear_pairs(model)
        if not pairs:
            raise UserError(
                f"--tensor {config.tensor}: model {config.model} has no pair of Linear layers to split; "
                "use mlp or lenet300"
            )
        for col, _row in pairs:
            width = getattr(model, col).out_features
            if width % config.tensor:
                raise UserError(
                    f"--tensor {config.tensor}: layer {col} has {width} outputs, not divisible by {config.tensor}"
                )

    def split_model(self, model: nn.Module, ctx: WorkerContext, sample: torch.Tensor) -> nn.Module:
        self.ctx = ctx
        self.part = self.layout.part(ctx.rank)
        mesh = init_device_mesh(
            ctx.device.type, (self.layout.replicas, self.layout.parts), mesh_dim_names=("data", "tensor")
        )
        self.mesh = mesh
        self.data_group = mesh["data"].get_group() if self.layout.replicas > 1 else None
        return tensor_parallel(model, mesh["tensor"])

    @property
    def reports_metrics(self) -> bool:  # every process of a replica computes the same loss
        return getattr(self, "part", 0) == 0

    def eval_forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        out = model(x)  # collective: every process of the replica takes part
        return out if self.reports_metrics else None

    def full_state_dict(self, model: nn.Module) -> dict[str, Any]:
        return {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in model.state_dict().items()}

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        # DTensors hold a device mesh, which does not pickle: keep the local shards.
        state = optimizer.state_dict()
        state["state"] = {
            i: {k: v.to_local() if isinstance(v, DTensor) else v for k, v in s.items()}
            for i, s in state["state"].items()
        }
        return state

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        wrapped = {}
        for i, s in state["state"].items():
            p = params[int(i)]
            wrapped[i] = {
                k: DTensor.from_local(v, p.device_mesh, p.placements)
                if isinstance(p, DTensor) and isinstance(v, torch.Tensor) and v.dim() > 0
                else v
                for k, v in s.items()
            }
        optimizer.load_state_dict({**state, "state": wrapped})

"""What every split model shares in the training loop: the layout, its groups, and the replicas.

A model-parallel strategy runs ``D`` replicas of a model split ``M`` ways (:mod:`..layout`). All
``M`` processes of a replica read the same batch (:meth:`data_rank_world` shards by replica), and
after the backward pass each process averages the gradients of its part over the ``D`` replicas of
that part (one flat all-reduce over its data group), which is synchronous data parallelism with
the same loss weighting as :mod:`escala.parallel.data.allreduce`: ``(D / n_global) sum_i w_i l_i``
per replica, averaged, gives the gradient of the mean loss over the global batch.

Data-parallel strategies other than all-reduce, gradient codecs and reduced precision do not
compose with a split model yet; :meth:`ModelParallel.check` says so before anything starts.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from escala.errors import UserError
from escala.parallel.model.layout import ProcessLayout, layout_from_config
from escala.parallel.strategy import Strategy
from escala.runtime.context import WorkerContext


def average_gradients(params: list[nn.Parameter], group: dist.ProcessGroup | None, size: int) -> None:
    """Average the gradients of ``params`` over ``group`` (``size`` processes) with one all-reduce.

    DTensor gradients (tensor parallelism) are averaged through their local shards: the replicas of
    a part hold the same shard of the same parameter.
    """
    grads = []
    for p in params:
        if p.grad is None:
            continue
        g = p.grad
        grads.append(g.to_local() if hasattr(g, "to_local") else g)
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, group=group)
    flat /= size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def merge_stage_states(ctx: WorkerContext, model: nn.Module, parts: int) -> dict[str, Any]:
    """The whole model's state dict from the stages of replica 0 (collective over all processes).

    Stages keep the unsplit model's child names, so their state dicts merge into the whole one."""
    states = ctx.all_gather_object(model.state_dict())
    merged: dict[str, Any] = {}
    for state in states[:parts]:  # replica 0's stages
        merged.update(state)
    return merged


class ModelParallel(Strategy):
    """Base of the pipeline, tensor and spatial strategies."""

    name = "model-parallel"
    per_rank_optimizer = True

    @classmethod
    def check(cls, config) -> None:
        layout = layout_from_config(config)
        flag = f"--{layout.kind} {layout.parts}"
        if config.strategy != "allreduce":
            raise UserError(
                f"{flag} combines with --strategy allreduce only (got {config.strategy}): the replicas of a "
                "split model average their gradients every step"
            )
        if config.compress != "none":
            raise UserError(f"{flag} does not combine with --compress yet (got {config.compress})")
        if config.precision != "fp32" or config.simulate != "none":
            raise UserError(f"{flag} runs in fp32 only (got --precision {config.precision}, "
                            f"--simulate {config.simulate})")
        if getattr(config, "straggler_delay", 0.0) > 0:
            raise UserError(f"{flag} does not combine with --straggler-delay")

    @classmethod
    def processes(cls, config) -> int:
        return layout_from_config(config).processes

    def __init__(self, config=None):
        super().__init__(config)
        self.layout: ProcessLayout = layout_from_config(config)

    def data_rank_world(self, ctx: WorkerContext) -> tuple[int, int]:
        return self.layout.replica(ctx.rank), self.layout.replicas

    def _make_groups(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.part = self.layout.part(ctx.rank)
        self.model_group, self.data_group = self.layout.groups(ctx.rank, self.config.timeout_s)

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer, ctx: WorkerContext) -> nn.Module:
        self.ctx = ctx
        self.local_module = model
        self.local_params = [p for p in model.parameters() if p.requires_grad]
        return model

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.layout.replicas > 1:
            average_gradients(self.local_params, self.data_group, self.layout.replicas)
        optimizer.step()

    def parameter_bytes(self, model: nn.Module) -> int:
        """Bytes of the parameters this process stores (DTensor shards count their local part)."""
        total = 0
        for p in model.parameters():
            t = p.to_local() if hasattr(p, "to_local") else p
            total += t.numel() * t.element_size()
        return total

    def summary(self) -> dict[str, Any]:
        per_process = self.ctx.all_gather_object(self.parameter_bytes(self.local_module))
        return {
            "layout": self.layout.describe(),
            "parameter_bytes_per_process": per_process[: self.layout.parts],
        }

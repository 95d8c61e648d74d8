"""Synchronous data parallelism: gradients averaged over all workers every step.

Each of N workers computes the gradient of its share of the global batch; an all-reduce averages the
N gradients (ring all-reduce moves 2(N-1)/N of the gradient bytes per worker) and every worker applies
the same update, so the replicas stay identical. The work is PyTorch's DistributedDataParallel, which
buckets gradients and overlaps their all-reduce with the rest of the backward pass.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from escala.parallel.strategy import Strategy
from escala.runtime.context import WorkerContext


class AllReduce(Strategy):
    name = "allreduce"

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer, ctx: WorkerContext) -> nn.Module:
        self.ctx = ctx
        self.grad_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        if not ctx.distributed:
            return model  # one worker: nothing to reduce, and no wrapper overhead
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model.module if isinstance(model, DistributedDataParallel) else model

    def summary(self) -> dict[str, Any]:
        # A ring all-reduce sends 2(N-1)/N of the gradient bytes from each worker per step.
        n = self.ctx.world_size
        return {"bytes_sent_per_worker_step": int(2 * (n - 1) / n * self.grad_bytes)}

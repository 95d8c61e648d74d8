"""Synchronous data parallelism: gradients averaged over all workers every step.

Each of N workers computes the gradient of its share of the global batch; an all-reduce averages the
N gradients (ring all-reduce moves 2(N-1)/N of the gradient bytes per worker) and every worker applies
the same update, so the replicas stay identical. The work is PyTorch's DistributedDataParallel, which
buckets gradients and overlaps their all-reduce with the rest of the backward pass.

``--compress`` swaps DDP's all-reduce for a communication hook running a gradient codec
(:mod:`escala.parallel.data.codecs.ddp`); ``--straggler-delay`` slows chosen ranks down
(:mod:`escala.parallel.data.straggler`), and every step then waits for the slowest one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from escala.parallel.data.codecs import Traffic, make_codec, without_momentum
from escala.parallel.data.codecs.ddp import HookState, codec_hook
from escala.parallel.data.straggler import Straggler, check_straggler
from escala.parallel.strategy import Strategy
from escala.runtime.context import WorkerContext


class AllReduce(Strategy):
    name = "allreduce"

    @classmethod
    def check(cls, config) -> None:
        check_straggler(config)

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer, ctx: WorkerContext) -> nn.Module:
        self.ctx = ctx
        self.grad_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        self.traffic = getattr(self, "traffic", None) or Traffic()
        self.codec = None
        self.straggler = Straggler.from_config(self.config, ctx.rank, ctx.world_size) if self.config else None
        if not ctx.distributed:
            return model  # one worker: nothing to reduce, and no wrapper overhead
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        ddp = DistributedDataParallel(model, device_ids=device_ids)
        if self.config is not None:
            self.codec = make_codec(self.config, seed=self.config.seed * 1009 + ctx.rank)
        if self.codec is not None:
            if getattr(self, "_codec_state", None):
                self.codec.load_state_dict(self._codec_state)
            index = {id(p): i for i, p in enumerate(model.parameters())}
            ddp.register_comm_hook(HookState(self.codec, ctx.world_size, index, self.traffic), codec_hook)
        return ddp

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model.module if isinstance(model, DistributedDataParallel) else model

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.straggler is not None:
            # The gradients are already reduced; a late step delays every rank's next all-reduce.
            self.straggler.wait(self.traffic.steps)
        with without_momentum(optimizer, self.codec):  # top-k's momentum correction did the momentum
            optimizer.step()

    def after_step(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if self.codec is None and self.ctx.distributed:
            n = self.ctx.world_size
            self.traffic.add(2 * (n - 1) / n * self.grad_bytes)
        if self.codec is not None:
            self.codec.advance()
        self.traffic.step()

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"traffic": self.traffic.state_dict()}
        if self.codec is not None:
            state["codec"] = self.codec.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Called before setup (the trainer restores first): keep it until the codec exists.
        self.traffic = Traffic()
        if "traffic" in state:
            self.traffic.load_state_dict(state["traffic"])
        self._codec_state = state.get("codec")

    def summary(self) -> dict[str, Any]:
        out = self.traffic.summary(self.ctx)
        if self.codec is not None:
            out["compress"] = self.codec.name
        return out

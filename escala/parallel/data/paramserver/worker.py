"""The worker side of the parameter server, and how the job's processes split into workers and servers.

Processes ``0..W-1`` are workers and run the ordinary training loop in their own process group (so
its evaluation and checkpoint collectives never involve the servers); processes ``W..W+S-1`` are
servers, each owning one contiguous range of the flat parameter vector (balanced by size).

A worker computes the gradient of its batch on its local copy of the parameters, adds it to an
accumulator, and every ``--push-every`` steps pushes the mean of the accumulated gradients (one
update from a k-times larger batch, so the learning rate keeps its meaning; compressed by
``--compress``, with error feedback kept per server shard) to every server, then receives each
server's fresh shard in reply (push and pull in one round trip). Workers never wait for each other,
only for the servers' answers (which the staleness bound may delay). Before evaluation and
checkpoints the workers meet at a barrier and pull, so they evaluate and save one agreed model (a
partial accumulation is kept in the checkpoint; at the very end, fewer than ``push_every`` last
gradients are not pushed); worker 0 also fetches the servers' state (shards, optimizer state,
versions) into the checkpoint, from which the servers restore themselves on ``--resume``.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from escala.errors import UserError
from escala.parallel.data.codecs import Traffic, make_codec
from escala.parallel.data.paramserver.protocol import (
    DONE,
    PULL,
    PUSH,
    SNAPSHOT,
    STATS,
    float_bits,
    shard_ranges,
    unpack_object,
)
from escala.parallel.data.paramserver.server import ParameterServer
from escala.parallel.data.straggler import Straggler, check_straggler
from escala.parallel.data.transport import HEADER, C10dTransport
from escala.parallel.strategy import Strategy
from escala.runtime.context import WorkerContext


@dataclasses.dataclass
class GroupContext(WorkerContext):
    """A worker's view of the job: ranks and collectives of the workers' own process group only."""

    group: Any = None

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
        return t.tolist()

    def all_gather_object(self, obj):
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def broadcast_object(self, obj, src: int = 0):
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, group=self.group, group_src=src)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier(group=self.group)


class ParamServer(Strategy):
    name = "paramserver"

    @classmethod
    def check(cls, config) -> None:
        check_straggler(config)

    @classmethod
    def servers(cls, config) -> int:
        return config.servers

    # -- roles -------------------------------------------------------------------------------------
    def assign_role(self, ctx: WorkerContext, model: nn.Module) -> WorkerContext | None:
        cfg = self.config
        workers, servers = cfg.workers, cfg.servers
        if ctx.world_size != workers + servers:
            raise UserError(
                f"strategy 'paramserver' needs workers + servers = {workers + servers} processes, "
                f"the job has {ctx.world_size}"
            )
        numel = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if numel < servers:
            raise UserError(f"field 'servers' is {servers} but the model has only {numel} parameters")
        self.ranges = shard_ranges(numel, servers)
        self.server_ranks = list(range(workers, workers + servers))
        group = dist.new_group(list(range(workers)))  # every process takes part in creating it
        if ctx.rank >= workers:
            self._serve(ctx.rank - workers, model)
            return None
        return GroupContext(
            rank=ctx.rank,
            world_size=workers,
            local_rank=ctx.local_rank,
            device=ctx.device,
            backend=ctx.backend,
            timeout=ctx.timeout,
            group=group,
        )

    def _serve(self, index: int, model: nn.Module) -> None:
        cfg = self.config
        lo, hi = self.ranges[index]
        flat = parameters_to_vector([p for p in model.parameters() if p.requires_grad])
        server = ParameterServer(cfg, flat[lo:hi].cpu(), list(range(cfg.workers)), C10dTransport(), index)
        if cfg.resume:
            from escala.checkpoint import load_checkpoint
            from escala.train.rundir import checkpoint_path

            saved = load_checkpoint(checkpoint_path(cfg.out))["strategy"][0].get("servers")
            if saved:
                server.load_state_dict(saved[index])
        server.serve()

    # -- the worker ----------------------------------------------------------------------------------
    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer, ctx: WorkerContext) -> nn.Module:
        cfg = self.config
        self.ctx = ctx
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.transport = C10dTransport()
        self.codec = make_codec(cfg, seed=cfg.seed * 1009 + ctx.rank)
        if self.codec is not None and getattr(self, "_codec_state", None):
            self.codec.load_state_dict(self._codec_state)
        self.traffic = getattr(self, "traffic", None) or Traffic()
        self.clock = getattr(self, "clock", 0)
        self.straggler = Straggler.from_config(cfg, ctx.rank, ctx.world_size)
        self.pending, self.accumulated = getattr(self, "_restored", (0, None))  # gradients not yet pushed
        if self.accumulated is not None:
            self.accumulated = self.accumulated.to(ctx.device)
        self.steps = 0
        self.read = [0] * len(self.server_ranks)  # shard versions our parameters come from
        # The servers apply the updates; this worker's optimizer only carries the scheduled lr.
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
        self.optimizer = optimizer
        self._pull()
        return model

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.straggler.wait(self.steps)
        self.steps += 1
        g = torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in self.params]
        )
        self.accumulated = g if self.accumulated is None else self.accumulated + g
        self.pending += 1
        if self.pending >= self.config.push_every:
            self._push()

    def _push(self) -> None:
        lr = float_bits(self.optimizer.param_groups[0]["lr"])
        self.clock += 1
        mean = (
            self.accumulated / self.pending
        )  # k gradients of one batch each act as one k-times larger batch
        for s, (rank, (lo, hi)) in enumerate(zip(self.server_ranks, self.ranges)):
            part = mean[lo:hi]
            wire = part if self.codec is None else self.codec.encode(part, [(s, hi - lo)])
            sent = self.transport.send(rank, [PUSH, self.read[s], self.clock, lr], wire)
            self.traffic.add(sent, HEADER * 8 + 4 * (hi - lo))
        self.accumulated, self.pending = None, 0
        self._receive_params()

    def _pull(self) -> None:
        for rank in self.server_ranks:
            self.transport.send(rank, [PULL])
        self._receive_params()

    def _receive_params(self) -> None:
        flat = parameters_to_vector(self.params).detach().clone()
        for s, (rank, (lo, hi)) in enumerate(zip(self.server_ranks, self.ranges)):
            reply = self.transport.recv_from(rank)
            self.read[s] = reply.header[1]
            flat[lo:hi] = reply.payload.view(torch.float32).to(flat.device)
        with torch.no_grad():
            vector_to_parameters(flat, self.params)

    def after_step(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if self.codec is not None:
            self.codec.advance()
        self.traffic.step()

    def synchronize(self, model: nn.Module) -> None:
        # A partial accumulation (fewer than push_every gradients) stays here and goes into the
        # checkpoint, so a resumed run pushes exactly what an uninterrupted one would.
        self.ctx.barrier()  # every push of every worker is applied: all pull the same parameters
        self._pull()

    def close(self) -> None:
        for rank in self.server_ranks:
            self.transport.send(rank, [DONE])
        self.transport.flush()

    # -- checkpoints and figures ---------------------------------------------------------------------
    def _ask_servers(self, kind: int) -> list[Any]:
        for rank in self.server_ranks:
            self.transport.send(rank, [kind])
        return [unpack_object(self.transport.recv_from(rank).payload) for rank in self.server_ranks]

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "traffic": self.traffic.state_dict(),
            "clock": self.clock,
            "pending": self.pending,
            "accumulated": None if self.accumulated is None else self.accumulated.cpu(),
        }
        if self.codec is not None:
            state["codec"] = self.codec.state_dict()
        if self.ctx.is_main:
            state["servers"] = self._ask_servers(SNAPSHOT)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.traffic = Traffic()
        self.traffic.load_state_dict(state["traffic"])
        self.clock = int(state["clock"])
        self._restored = (int(state.get("pending", 0)), state.get("accumulated"))
        self._codec_state = state.get("codec")

    def summary(self) -> dict[str, Any]:
        out = self.traffic.summary(self.ctx)
        steps = self.ctx.all_reduce_sum([float(self.traffic.steps)])[0]
        if not self.ctx.is_main:
            return out
        figures = self._ask_servers(STATS)
        updates = sum(f["updates"] for f in figures)
        out.update(
            {
                "servers": len(figures),
                "updates_per_server": updates / len(figures),
                "staleness_mean": sum(f["staleness_sum"] for f in figures) / max(updates, 1),
                "staleness_max": max(f["staleness_max"] for f in figures),
                "clock_gap_max": max(f["clock_gap_max"] for f in figures),
                "held_pushes": sum(f["held"] for f in figures),
                "staleness_bound": self.config.staleness_bound,
                "server_bytes_per_worker_step": sum(f["bytes_sent"] for f in figures) / max(steps, 1),
            }
        )
        if self.codec is not None:
            out["compress"] = self.codec.name
        return out

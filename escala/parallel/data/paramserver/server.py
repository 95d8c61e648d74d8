"""A parameter server: owns one shard of the parameters and applies pushed gradients as they arrive
(Dean et al. 2012, "Large Scale Distributed Deep Networks", Downpour SGD).

The server keeps its shard ``x_s`` as one flat tensor with an optimizer of the run's kind (SGD with
momentum, AdamW...). For each push from worker ``w``, computed on the shard as it was at version
``v_read``, it applies

    x_s <- step(x_s, g, lr / (tau + 1))   with staleness  tau = v - v_read

where ``v`` is the number of updates the shard has had. Dividing by ``tau + 1`` (on by default,
``--no-staleness-lr`` turns it off) is the staleness-aware rate of Zhang et al. 2016
("Staleness-aware Async-SGD for Distributed Deep Learning", IJCAI): ``alpha_0 / sigma`` with ``sigma``
counting the updates since the read, this one included, so a fresh update keeps ``lr`` and W workers
in round robin (``tau = W - 1``) each take ``lr / W``: per sample the same rate as synchronous SGD on
the W-times larger batch. Without it every push applies the full rate, W times the synchronous
step, which with momentum 0.9 diverges at the default ``lr 0.1`` (digits, 2 workers).

Stale synchronous parallel (Ho et al. 2013, "More Effective Distributed ML via a Stale Synchronous
Parallel Parameter Server"): with ``--staleness-bound s >= 0`` the server answers a worker's push only
when that worker's clock (pushes so far) is at most ``s`` ahead of the slowest running worker, so a
worker never races more than ``s`` pushes ahead. It follows that an update's staleness is at most
``(W - 1)(2s + 1)`` versions; the summary reports both the clock gaps and the staleness actually seen.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from escala.parallel.data.codecs import make_codec, without_momentum
from escala.parallel.data.paramserver.protocol import (
    DONE,
    PARAMS,
    PULL,
    PUSH,
    SNAPSHOT,
    STATE,
    STATS,
    bits_float,
    pack_object,
)
from escala.parallel.data.transport import Transport
from escala.train.optim import build_optimizer


class ParameterServer:
    def __init__(self, config, shard: torch.Tensor, workers: list[int], transport: Transport, index: int):
        self.config = config
        self.index = index
        self.param = nn.Parameter(shard.detach().clone().float())
        self.optimizer = build_optimizer([self.param], config)
        self.codec = make_codec(config)
        self.transport = transport
        self.workers = list(workers)
        self.version = 0
        self.clock = dict.fromkeys(self.workers, 0)
        self.done: set[int] = set()
        self.held: set[int] = set()
        self.bound = config.staleness_bound
        self.stats = {"updates": 0, "staleness_sum": 0, "staleness_max": 0, "clock_gap_max": 0, "held": 0}
        self.histogram: dict[int, int] = {}
        self.bytes_sent = 0

    # -- state for checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "param": self.param.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
            "version": self.version,
            "stats": dict(self.stats),
            "histogram": dict(self.histogram),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.param.copy_(state["param"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.version = int(state["version"])
        self.stats.update(state["stats"])
        self.histogram = {int(k): int(v) for k, v in state["histogram"].items()}

    # -- the loop --------------------------------------------------------------------------------
    def serve(self) -> None:
        """Answer workers until every one of them has said it is done."""
        while len(self.done) < len(self.workers):
            msg = self.transport.recv_any()
            w = msg.src
            if msg.kind == PULL:
                self._send_params(w)
            elif msg.kind == PUSH:
                self._apply(w, msg.header[1], bits_float(msg.header[3]), msg.payload)
                self.clock[w] += 1
                self.held.add(w)
                self._release()
                self.stats["held"] += w in self.held  # this push's worker must wait (SSP)
            elif msg.kind == SNAPSHOT:
                self.transport.send(w, [STATE], pack_object(self.state_dict()))
            elif msg.kind == STATS:
                self.transport.send(w, [STATE], pack_object(self.figures()))
            elif msg.kind == DONE:
                self.done.add(w)
                self._release()  # a finished worker no longer holds the others back
        self.transport.flush()

    def _apply(self, worker: int, read_version: int, lr: float, payload: torch.Tensor) -> None:
        n = self.param.numel()
        grad = payload.view(torch.float32) if self.codec is None else self.codec.decode(payload, n)
        staleness = self.version - read_version
        if self.config.staleness_lr:
            lr = lr / (staleness + 1)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.param.grad = grad.to(self.param.device).view_as(self.param)
        with without_momentum(self.optimizer, self.codec):  # top-k's momentum correction did it
            self.optimizer.step()
        self.version += 1
        s = self.stats
        s["updates"] += 1
        s["staleness_sum"] += staleness
        s["staleness_max"] = max(s["staleness_max"], staleness)
        self.histogram[staleness] = self.histogram.get(staleness, 0) + 1

    def _release(self) -> None:
        """Answer every held worker that is no more than ``bound`` pushes ahead of the slowest."""
        running = [self.clock[v] for v in self.workers if v not in self.done]
        slowest = min(running) if running else 0
        for w in sorted(self.held):
            gap = self.clock[w] - slowest
            if self.bound < 0 or gap <= self.bound:
                self.held.discard(w)
                self.stats["clock_gap_max"] = max(self.stats["clock_gap_max"], gap)
                self._send_params(w)

    def _send_params(self, worker: int) -> None:
        self.bytes_sent += self.transport.send(worker, [PARAMS, self.version], self.param.detach())

    def figures(self) -> dict[str, Any]:
        return {**self.stats, "version": self.version, "bytes_sent": self.bytes_sent}

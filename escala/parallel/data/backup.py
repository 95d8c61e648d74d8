"""Synchronous SGD with backup workers (Chen et al. 2016, "Revisiting Distributed Synchronous SGD";
TensorFlow's ``SyncReplicasOptimizer``).

With N workers and b backups, each step applies the average of the *first* N-b gradients to arrive
and drops the other b, so a step waits for the (N-b)-th fastest worker instead of the slowest:

    x <- x - lr * (1/(N-b)) * sum_{r in first N-b} g_r(x)

"First to arrive" needs someone who sees the arrivals: rank 0 is the *chief*. It computes its own
gradient like every worker (and always contributes it: the chief must finish computing before it can
aggregate anyway, so dropping its gradient would save no time), then receives gradient messages from
any source in arrival order over point-to-point c10d (:mod:`escala.parallel.data.transport`) until it
holds N-b of them for the current step. It applies the optimizer step (the chief owns the optimizer
state) and sends the new parameters to the workers it used. A message that arrives late is tagged with
an older step: the chief drops it and immediately sends that worker the current parameters, so a
dropped worker catches up on the new parameters without waiting a full step, and the training loop
skips the batches the others consumed meanwhile (``steps_to_skip``). Before evaluation and checkpoints
(``synchronize``) the chief waits for every outstanding gradient and releases all workers at the same
step, so the loop's collectives see consistent replicas.

Per step, the chief appends ``{"step", "used", "dropped", "wait_s"}`` to ``OUT/backup.jsonl``; the
summary reports how often each rank was dropped. With ``b = 0`` this is synchronous SGD: the same
parameters as the all-reduce and the single-process reference. Gradient pushes can be compressed
(``--compress``); parameters travel back as float32.
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from escala.errors import UserError
from escala.metrics import JsonlWriter
from escala.parallel.data.codecs import Traffic, make_codec
from escala.parallel.data.straggler import Straggler, check_straggler
from escala.parallel.data.transport import HEADER, C10dTransport
from escala.parallel.strategy import Strategy
from escala.runtime.context import WorkerContext

GRAD, PARAMS = 1, 2


def flat_grad(params: list[nn.Parameter]) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])


def set_grad(params: list[nn.Parameter], flat: torch.Tensor) -> None:
    offset = 0
    for p in params:
        p.grad = flat[offset : offset + p.numel()].view_as(p).to(p.dtype).clone()
        offset += p.numel()


class Backup(Strategy):
    name = "backup"

    @classmethod
    def check(cls, config) -> None:
        check_straggler(config)
        if config.backups >= config.workers:
            raise UserError(
                f"field 'backups' is {config.backups} but must be smaller than 'workers' ({config.workers}): "
                "each step needs the gradient of at least one worker"
            )

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer, ctx: WorkerContext) -> nn.Module:
        cfg = self.config
        self.ctx, self.model = ctx, model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.slots = [(i, p.numel()) for i, p in enumerate(self.params)]
        self.version = getattr(self, "version", 0)  # optimizer steps the chief has applied
        # No momentum correction: the chief's own gradient and dropped ones never pass through a codec.
        self.codec = make_codec(cfg, seed=cfg.seed * 1009 + ctx.rank, momentum_correction=False)
        if self.codec is not None and getattr(self, "_codec_state", None):
            self.codec.load_state_dict(self._codec_state)
        self.push = getattr(self, "push", None) or Traffic()  # gradient messages (compressible)
        self.sent = getattr(self, "sent", None) or Traffic()  # everything this rank sends
        self.straggler = Straggler.from_config(cfg, ctx.rank, ctx.world_size)
        self.transport = C10dTransport()
        self.need = ctx.world_size - cfg.backups  # gradients per step, the chief's own included
        self.replied = [self.version] * ctx.world_size
        self.skip = 0
        self.dropped = getattr(self, "dropped", [0] * ctx.world_size)
        self.log: list[dict[str, Any]] = []
        self.log_path = Path(cfg.out) / "backup.jsonl"
        if ctx.distributed and not ctx.is_main:
            # Workers never step their own optimizer (the chief owns the update): silence the scheduler's
            # "scheduler.step() before optimizer.step()" warning, which is expected here.
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
        if ctx.is_main and ctx.distributed and cfg.resume:
            JsonlWriter(self.log_path).truncate_after("step", self.version)
        return model

    # -- one step --------------------------------------------------------------------------------
    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.straggler.wait(self.version)
        if not self.ctx.distributed:
            optimizer.step()
            self.version += 1
        elif self.ctx.is_main:
            self._lead(optimizer)
        else:
            self._follow()

    def _follow(self) -> None:
        """A worker: push the gradient, receive the parameters the chief holds once it has moved on."""
        g = flat_grad(self.params)
        wire = g if self.codec is None else self.codec.encode(g, self.slots)
        n = self.transport.send(0, [GRAD, self.version], wire)
        self.push.add(n, HEADER * 8 + 4 * g.numel())
        self.sent.add(n)
        reply = self.transport.recv_from(0)
        with torch.no_grad():
            vector_to_parameters(reply.payload.view(torch.float32).to(g.device), self.params)
        new_version = reply.header[1]
        self.skip = new_version - self.version - 1
        self.version = new_version

    def _decode(self, payload: torch.Tensor, numel: int) -> torch.Tensor:
        if self.codec is None:
            return payload.view(torch.float32)
        return self.codec.decode(payload, numel)

    def _lead(self, optimizer: torch.optim.Optimizer) -> None:
        """The chief: its own gradient plus the first others for this step, then the update."""
        started = time.perf_counter()
        own = flat_grad(self.params)
        got: dict[int, torch.Tensor] = {}
        while len(got) < self.need - 1:
            msg = self.transport.recv_any()
            if msg.header[1] == self.version:
                got[msg.src] = self._decode(msg.payload, own.numel()).to(own.device)
            else:  # computed on older parameters: drop it, hand that worker the current ones at once
                self._reply(msg.src)
        total = own.clone()
        for rank in sorted(got):  # a fixed order of the sum, whatever the arrival order
            total += got[rank]
        set_grad(self.params, total / self.need)
        optimizer.step()
        self.version += 1
        for rank in got:
            self._reply(rank)
        dropped = [r for r in range(1, self.ctx.world_size) if r not in got]
        for r in dropped:
            self.dropped[r] += 1
        self.log.append(
            {
                "step": self.version,
                "used": [0, *sorted(got)],
                "dropped": dropped,
                "wait_s": round(time.perf_counter() - started, 6),
            }
        )

    def _reply(self, rank: int) -> None:
        self.sent.add(self.transport.send(rank, [PARAMS, self.version], parameters_to_vector(self.params)))
        self.replied[rank] = self.version

    def steps_to_skip(self) -> int:
        skip, self.skip = self.skip, 0
        return skip

    def after_step(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if self.codec is not None:
            self.codec.advance()
        self.push.step()
        self.sent.step()

    def synchronize(self, model: nn.Module) -> None:
        """Chief: collect every gradient still being computed and release all workers at this step."""
        if not (self.ctx.distributed and self.ctx.is_main):
            return
        while any(v < self.version for v in self.replied[1:]):
            msg = self.transport.recv_any()
            self._reply(msg.src)  # necessarily late: this step is already taken
        self.transport.flush()
        if self.log:
            with self.log_path.open("a") as fh:  # one write per epoch, not one fsync per step
                fh.write("".join(json.dumps(r) + "\n" for r in self.log))
                fh.flush()
                os.fsync(fh.fileno())
            self.log.clear()

    # -- state and figures -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {
            "version": self.version,
            "push": self.push.state_dict(),
            "sent": self.sent.state_dict(),
            "dropped": list(self.dropped),
        }
        if self.codec is not None:
            state["codec"] = self.codec.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.version = int(state["version"])
        self.push, self.sent = Traffic(), Traffic()
        self.push.load_state_dict(state["push"])
        self.sent.load_state_dict(state["sent"])
        self.dropped = list(state["dropped"])
        self._codec_state = state.get("codec")

    def summary(self) -> dict[str, Any]:
        rows = self.ctx.all_gather_object((self.push.state_dict(), self.sent.state_dict()))
        workers = rows[1:] or rows
        steps = max(rows[0][1]["steps"], 1)
        pushed = sum(p["wire"] for p, _ in workers) / len(workers) / steps
        raw = sum(p["raw"] for p, _ in workers) / len(workers) / steps
        out = {
            "bytes_sent_per_worker_step": sum(s["wire"] for _, s in rows) / len(rows) / steps,
            "push_bytes_per_worker_step": pushed,
            "compression_ratio": raw / pushed if pushed else 1.0,
            "backups": self.config.backups,
            "dropped_by_rank": list(self.dropped),
            "dropped_per_step": sum(self.dropped) / steps,
        }
        if self.codec is not None:
            out["compress"] = self.codec.name
        return out

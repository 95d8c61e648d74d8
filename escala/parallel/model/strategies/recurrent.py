"""``escala train --model lstm --pipeline K``: a stacked LSTM, one group of layers per process,
pipelined over time steps.

The zoo's :class:`~escala.models.lstm.LSTMClassifier` (``rows, lstm1..lstmL, last, fc``) is cut
into K contiguous groups of LSTM layers, balanced by parameter count (an LSTM layer's work per step,
``4 H (F + H)`` multiply-adds per sample, is proportional to it) or at ``--pipeline-cuts``; the
first process also reads the rows, the last one also holds the classifier and computes the loss.
Each step runs :class:`~escala.parallel.model.recurrent.PipelinedLSTM`: process k computes time
step t while process k+1 computes step t-1 (the wavefront of Sutskever, Vinyals and Le 2014), then
backpropagation through time runs the same wavefront in reverse. The T time steps play the part of
the micro-batches of a layer pipeline, so the idle fraction of fill and drain is
``(K - 1) / (T + K - 1)`` in each direction; ``summary.json`` reports it next to the measured one
(``1 - compute / step time`` per process, the step lasting until its last process finishes, first
step excluded, as for the layer pipeline).

``--microbatches`` does not apply (the whole batch moves one time step at a time). Replicas
(``--workers D``) average each group's gradients over their data group as for every split model.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from escala.errors import UserError
from escala.models.lstm import LSTMClassifier, LSTMLayer
from escala.parallel.model.pipeline.partition import (
    balance,
    layer_param_costs,
    partition,
    resolve_cuts,
    stage_starts,
)
from escala.parallel.model.pipeline.schedule import theoretical_bubble
from escala.parallel.model.recurrent import PipelinedLSTM, lstm_cell
from escala.parallel.model.strategies.base import ModelParallel, merge_stage_states
from escala.runtime.context import WorkerContext


def layer_group_cuts(model: nn.Module, stages: int, cuts: tuple | list = ()) -> list[int]:
    """Child indices where stages 2..K of ``model`` (an :class:`LSTMClassifier`) begin, each stage
    holding at least one LSTM layer; a :class:`UserError` when that cannot be."""
    if not isinstance(model, LSTMClassifier):
        raise UserError(
            f"--pipeline {stages}: pipelining over time steps needs the zoo's lstm model "
            f"(got {type(model).__name__})"
        )
    names = [n for n, _ in model.named_children()]
    layers = model.lstm_layers  # children 1..L
    if stages > len(layers):
        raise UserError(
            f"--pipeline {stages}: model lstm has {len(layers)} LSTM layers (hidden {tuple(model.hidden)}); "
            f"use at most {len(layers)} stages, or more layers (e.g. --hidden {','.join(['64'] * stages)})"
        )
    if cuts:
        starts = resolve_cuts(names, list(cuts), stages)[1:]
        bad = [names[c] for c in starts if names[c] not in layers[1:]]
        if bad:
            raise UserError(
                f"--pipeline-cuts {','.join(map(str, cuts))}: stages of model lstm must begin at an LSTM layer "
                f"after the first ({', '.join(layers[1:]) or 'none'}), not at {', '.join(bad)}"
            )
        return starts
    costs = [c for n, c in zip(names, layer_param_costs(model)) if n in layers]
    return [names.index(layers[s]) for s in balance(costs, stages)[1:]]


class RecurrentPipeline(ModelParallel):
    name = "pipeline"
    owns_step = True

    @classmethod
    def check(cls, config) -> None:
        super().check(config)
        if config.pipeline_schedule != "gpipe":
            raise UserError(
                f"--pipeline-schedule {config.pipeline_schedule}: model lstm is pipelined over time steps "
                "(forward wavefront, then backward); leave the schedule at gpipe"
            )
        if config.pipeline_balance != "params":
            raise UserError(
                f"--pipeline-balance {config.pipeline_balance}: model lstm balances its layer groups by "
                "parameter count (proportional to their work per step); use params or --pipeline-cuts"
            )

    @classmethod
    def check_model(cls, config, model: nn.Module, input_shape: tuple[int, ...]) -> None:
        layer_group_cuts(model, config.pipeline, config.pipeline_cuts)

    def __init__(self, config=None):
        super().__init__(config)
        self.stack: PipelinedLSTM | None = None
        self.steps_run = 0
        self.busy_s = 0.0
        self.walls: list[float] = []  # this process's wall seconds of each timed step

    def split_model(self, model: nn.Module, ctx: WorkerContext, sample: torch.Tensor) -> nn.Module:
        k = self.layout.parts
        self._make_groups(ctx)
        stages = partition(model, k, cuts=layer_group_cuts(model, k, self.config.pipeline_cuts))
        self.cuts = stage_starts(model, stages)
        self.layers_per_stage = [[n for n, m in s.named_children() if isinstance(m, LSTMLayer)] for s in stages]
        mine = stages[self.part]
        cells = [lstm_cell(m, 0) for m in mine.children() if isinstance(m, LSTMLayer)]
        self.stack = PipelinedLSTM(group=self.model_group, cells=cells)
        self.time_steps = model.steps
        self.rows = mine.rows if self.stack.first else None
        self.head = nn.Sequential(mine.last, mine.fc) if self.stack.last else None
        return mine

    @property
    def reports_metrics(self) -> bool:  # the loss and predictions exist on the last process only
        return self.stack is None or self.stack.last

    def _forward(self, x: torch.Tensor) -> torch.Tensor | None:
        """The top layer's outputs (N, T, H) on the last process (a leaf), None elsewhere."""
        if self.stack.first:
            return self.stack.forward(self.rows(x))
        return self.stack.forward(None, batch=x.shape[0], steps=self.time_steps)

    def forward_backward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch, scale: float):
        stack = self.stack
        dist.barrier(group=self.model_group)  # every process starts the step together: a fair wall clock
        stack.busy_s = 0.0
        t0 = time.perf_counter()
        top = self._forward(x)
        total = None
        if stack.last:
            c0 = time.perf_counter()
            out = self.head(top)
            if batch.has_filler:  # only in a short last batch: the filler sample must not count
                total = (F.cross_entropy(out, y, reduction="none") * batch.weights.to(out.device)).sum()
            else:
                total = F.cross_entropy(out, y, reduction="sum")
            (total * scale).backward()
            stack.busy_s += time.perf_counter() - c0
            stack.backward(top.grad)
        else:
            stack.backward()
        wall = time.perf_counter() - t0
        if self.steps_run > 0:  # as for the layer pipeline: the first step (warm-up) is left out
            self.busy_s += stack.busy_s
            self.walls.append(wall)
        self.steps_run += 1
        return total

    def eval_forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        top = self._forward(x)  # collective: every process of the replica takes part
        return self.head(top) if self.stack.last else None

    def full_state_dict(self, model: nn.Module) -> dict[str, Any]:
        return merge_stage_states(self.ctx, model, self.layout.parts)

    def summary(self) -> dict[str, Any]:
        # As for the layer pipeline: idle share of the pipeline's step time (its slowest process's).
        stats = self.ctx.all_gather_object((self.walls, self.busy_s))[: self.layout.parts]
        steps = min(len(w) for w, _ in stats)
        total = sum(max(w[i] for w, _ in stats) for i in range(steps))
        bubbles = [1.0 - busy / total for _, busy in stats] if total > 0 else []
        return {
            **super().summary(),
            "pipeline": {
                "stages": self.layout.parts,
                "pipelined_over": "time steps",
                "time_steps": self.time_steps,
                "stage_starts": self.cuts,
                "layers_per_stage": self.layers_per_stage,
                "bubble_measured": sum(bubbles) / len(bubbles) if bubbles else None,
                "bubble_per_stage": bubbles or None,
                "bubble_theory": theoretical_bubble(self.layout.parts, self.time_steps),
            },
        }

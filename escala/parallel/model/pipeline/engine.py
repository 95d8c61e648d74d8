"""Run one pipeline stage per process with PyTorch's pipelining engine, and measure the bubble.

The engine is ``torch.distributed.pipelining`` (``PipelineStage`` + ``ScheduleGPipe`` /
``Schedule1F1B``): it splits the mini-batch into micro-batches, runs the schedule, and moves
activations and their gradients between neighbouring stages with c10d point-to-point send/recv,
which gloo supports on CPU. escala adds what it lacks:

* the partition of a sequential model into balanced stages (:mod:`.partition`);
* a *measured* bubble fraction. Each stage's module is wrapped so that the wall-clock time it spends
  computing is recorded: forward from entry to exit, backward from the moment the gradient of its
  output arrives to the last parameter (or input) gradient it produces. Every step starts with a
  barrier over the pipeline; the pipeline's step time T is the time until its *last* stage finishes
  (the slowest stage's wall clock, step by step), and a stage that computed for C seconds was idle
  ``1 - C / T`` of it. The pipeline's bubble is the mean over stages (:func:`pipeline_bubble`), to be
  compared with ``(K - 1) / (M + K - 1)`` (:mod:`.schedule`). That measured idle time is split in two:
  the idle time the schedule itself implies with the stage times measured (fill/drain, plus unequal
  stages), from replaying the schedule with no communication (:func:`~.schedule.simulate`), and the
  rest: sending and receiving activations and gradients, and the engine's per-micro-batch work.

Gradients are *summed* over micro-batches (``scale_grads=False``): with a loss function that sums
per-sample losses and divides by the whole mini-batch size, the gradient equals that of the
unsplit model on the whole mini-batch, which is what the parity tests check.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

from escala.errors import UserError
from escala.parallel.model.pipeline.schedule import SCHEDULES, schedule, simulate

_SCHEDULE_CLASSES = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}


class _Clock:
    """Accumulates the compute seconds of one stage within one step."""

    def __init__(self) -> None:
        self.forward = self.backward = 0.0
        self._b_start: float | None = None
        self._b_last = 0.0

    @property
    def busy(self) -> float:
        return self.forward + self.backward

    def reset(self) -> None:
        self.forward = self.backward = 0.0
        self._b_start = None

    def close_backward(self) -> None:
        if self._b_start is not None:
            self.backward += self._b_last - self._b_start
            self._b_start = None

    def backward_started(self) -> None:
        self.close_backward()
        self._b_start = self._b_last = time.perf_counter()

    def backward_tick(self) -> None:
        self._b_last = time.perf_counter()


class _MarkBackward(torch.autograd.Function):
    """Identity whose backward calls ``mark()`` when the gradient passes: on a stage's output it marks
    the start of the stage's backward for one micro-batch, on its input the last thing it computes."""

    @staticmethod
    def forward(ctx, x, mark):
        ctx.mark = mark
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        ctx.mark()
        return grad, None


class _Timed(nn.Module):
    def __init__(self, inner: nn.Module, clock: _Clock) -> None:
        super().__init__()
        self.inner, self.clock = inner, clock
        for p in inner.parameters():
            # Fires after each parameter's gradient is accumulated: the latest one ends the backward.
            p.register_post_accumulate_grad_hook(lambda _p: clock.backward_tick())

    def forward(self, x):
        self.clock.close_backward()
        t0 = time.perf_counter()
        if x.requires_grad:
            x = _MarkBackward.apply(x, self.clock.backward_tick)
        out = self.inner(x)
        self.clock.forward += time.perf_counter() - t0
        return _MarkBackward.apply(out, self.clock.backward_started)


class PipelineStageRunner:
    """This process's stage of a K-stage pipeline.

    Args:
        module: this stage's layers (from :func:`~.partition.partition`).
        stage_index, num_stages: position in the pipeline; stage i runs on rank i of ``group``.
        microbatches: M, the number of micro-batches each mini-batch is split into.
        schedule: ``"gpipe"`` or ``"1f1b"``.
        loss_fn: ``loss_fn(output, target)`` per micro-batch on the last stage; make it a sum over
            samples divided by the mini-batch size for gradients equal to the unsplit model's.
        group: the process group of this pipeline (default: the whole world).
        measure: time each step (a barrier over ``group`` before it) to report the bubble.
    """

    def __init__(
        self,
        module: nn.Module,
        stage_index: int,
        num_stages: int,
        microbatches: int,
        *,
        schedule: str = "gpipe",
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        group: dist.ProcessGroup | None = None,
        device: torch.device | str = "cpu",
        measure: bool = True,
    ) -> None:
        if schedule not in _SCHEDULE_CLASSES:
            raise UserError(
                f"pipeline schedule {schedule!r} is unknown; choose one of {', '.join(SCHEDULES)}"
            )
        if microbatches < 1:
            raise UserError(f"microbatches must be >= 1, got {microbatches}")
        if schedule == "1f1b" and microbatches < num_stages:
            # PyTorch's Schedule1F1B refuses this; with M < K 1F1B degenerates into fill-drain anyway.
            raise UserError(
                f"schedule 1f1b needs microbatches >= pipeline stages ({microbatches} < {num_stages}); "
                "raise microbatches or use gpipe"
            )
        world = dist.get_world_size(group) if dist.is_initialized() else 1
        if world != num_stages:
            raise UserError(
                f"a {num_stages}-stage pipeline needs {num_stages} processes, the group has {world}"
            )
        self.module = module
        self.stage_index, self.num_stages = stage_index, num_stages
        self.microbatches, self.schedule_name = microbatches, schedule
        self.group, self.measure = group, measure
        self.is_first, self.is_last = stage_index == 0, stage_index == num_stages - 1
        self.clock = _Clock()
        self.stage = PipelineStage(
            _Timed(module, self.clock), stage_index, num_stages, torch.device(device), group=group
        )
        self.schedule = _SCHEDULE_CLASSES[schedule](
            self.stage, n_microbatches=microbatches, loss_fn=loss_fn, scale_grads=False
        )
        self.loss_fn = loss_fn
        self._target_like: torch.Tensor | None = None  # an empty tensor with the targets' dtype/shape
        self._target_rows: int | None = None
        self.steps = 0
        self.busy_s = 0.0  # compute seconds over the timed steps (all but the first)
        self.wall_s = 0.0  # this stage's own wall seconds over the timed steps
        self.forward_s = self.backward_s = 0.0
        self.walls: list[float] = []  # this stage's wall seconds of each timed step

    def _check_batch(self, x: torch.Tensor | None) -> None:
        if x is not None and x.shape[0] % self.microbatches:
            raise UserError(
                f"mini-batch of {x.shape[0]} samples does not split into {self.microbatches} equal "
                "micro-batches; make the batch size a multiple of microbatches"
            )

    def step(self, x: torch.Tensor | None = None, target: torch.Tensor | None = None) -> torch.Tensor | None:
        """Forward and backward of one mini-batch. The first stage passes ``x``, the last ``target``;
        the last stage returns the summed loss of the micro-batches, the others None."""
        self._check_batch(x)
        self._check_batch(target)
        if target is not None:
            self._target_like, self._target_rows = target[:0], target.shape[0]
        if self.measure and dist.is_initialized():
            dist.barrier(group=self.group)
        self.clock.reset()
        t0 = time.perf_counter()
        losses: list[torch.Tensor] = []
        args = (x,) if self.is_first else ()
        self.schedule.step(*args, target=target if self.is_last else None, losses=losses)
        self.clock.close_backward()
        wall = time.perf_counter() - t0
        # The first step also infers the shapes each stage sends (an extra forward); keep it out.
        if self.steps > 0:
            self.busy_s += self.clock.busy
            self.wall_s += wall
            self.forward_s += self.clock.forward
            self.backward_s += self.clock.backward
            self.walls.append(wall)
        self.steps += 1
        return torch.stack([loss.detach() for loss in losses]).sum() if self.is_last else None

    def forward(self, x: torch.Tensor | None = None, batch_size: int | None = None) -> torch.Tensor | None:
        """Forward only (evaluation); the last stage returns the whole mini-batch's output.

        PyTorch's schedule computes its loss on the last stage even when evaluating, so that stage
        is given a dummy target shaped like the training targets (``batch_size`` rows, by default
        those of the last training step); the loss is thrown away.
        """
        self._check_batch(x)
        args = (x,) if self.is_first else ()
        target = None
        if self.is_last and self.loss_fn is not None:
            rows = batch_size or (x.shape[0] if x is not None else self._target_rows)
            if rows is None or self._target_like is None:
                raise UserError("the last pipeline stage evaluates after a training step, or with batch_size")
            target = self._target_like.new_zeros((rows, *self._target_like.shape[1:]))
        # The training schedule's own eval(): it notices the switch to forward-only and back, and
        # rebuilds the stage's receive buffers each time. (A second schedule on the same stage would
        # leave them without requires_grad, and no gradient would reach the earlier stages again.)
        with torch.no_grad():
            out = self.schedule.eval(*args, target=target)
        return out if self.is_last else None

    def bubble(self) -> float:
        """This stage's idle fraction of its *own* wall time over the steps after the first (the
        pipeline's bubble, over the time until its last stage finishes, is :func:`pipeline_bubble`)."""
        return 1.0 - self.busy_s / self.wall_s if self.wall_s > 0 else float("nan")

    def stats(self) -> dict:
        """What :func:`pipeline_bubble` needs from this stage (picklable, to gather over stages)."""
        return {"walls": list(self.walls), "forward_s": self.forward_s, "backward_s": self.backward_s}

    def parameter_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.module.parameters())


def pipeline_bubble(stats: list[dict], schedule_name: str, microbatches: int) -> dict:
    """The pipeline's measured bubble from every stage's :meth:`PipelineStageRunner.stats` (in stage
    order), split into what the schedule implies and what communication and overhead add.

    * ``bubble_measured``: mean over stages of ``1 - C_k / T``, T the pipeline's step time (the
      slowest stage's wall clock of each step, summed), C_k stage k's compute time;
    * ``bubble_schedule``: the same fraction in a replay of the schedule with each stage's measured
      per-micro-batch forward and backward times and free communication: fill/drain plus the idle
      time of unequal stages (equal stages give exactly ``(K - 1) / (M + K - 1)``);
    * ``bubble_overhead``: the difference, the idle time that communication (posting and waiting on
      sends and receives) and the engine's per-micro-batch work add.

    Values are None before a timed step (the first step, which infers shapes, is not timed).
    """
    steps = min((len(s["walls"]) for s in stats), default=0)
    if steps == 0:
        return {"bubble_measured": None, "bubble_per_stage": None, "bubble_schedule": None, "bubble_overhead": None}
    total = sum(max(s["walls"][i] for s in stats) for i in range(steps))
    per_stage = [1.0 - (s["forward_s"] + s["backward_s"]) / total for s in stats]
    passes = steps * microbatches
    sim = simulate(
        schedule(schedule_name, len(stats), microbatches),
        forward=[s["forward_s"] / passes for s in stats],
        backward=[s["backward_s"] / passes for s in stats],
    )
    measured = sum(per_stage) / len(per_stage)
    return {
        "bubble_measured": measured,
        "bubble_per_stage": per_stage,
        "bubble_schedule": sim.bubble,
        "bubble_overhead": measured - sim.bubble,
    }

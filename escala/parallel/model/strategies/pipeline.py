"""``escala train --pipeline K --microbatches M``: the one training loop on a K-stage pipeline.

The model (an ``nn.Sequential``) is cut into K balanced stages (:mod:`..pipeline.partition`, by
parameter count, by measured time, or at ``--pipeline-cuts``); stage k of replica d runs on rank
``d*K + k``. Each step the replica's batch is split into M micro-batches and run through
``torch.distributed.pipelining`` with the GPipe or 1F1B schedule (:mod:`..pipeline.engine`). The
loss exists on the last stage only, so this strategy owns the forward/backward of the step: the
last stage's loss function is ``scale * sum_i l_i`` per micro-batch (filler samples of a short last
batch carry the ignored label), which sums over micro-batches to exactly the loop's loss.

Every batch is padded to ``batch_size`` samples, so all steps and all evaluation batches have the
micro-batch shape the stages inferred on their first step. ``summary.json`` gets the measured bubble
fraction (mean over stages of their idle share of the pipeline's step time, first step excluded),
split into the schedule's part (fill/drain and unequal stages) and communication/overhead
(:func:`~..pipeline.engine.pipeline_bubble`), next to the theory ``(K-1)/(M+K-1)`` (Huang et al.
2019, GPipe) and the parameter bytes of every stage.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from escala.errors import UserError
from escala.parallel.model.pipeline.engine import PipelineStageRunner, pipeline_bubble
from escala.parallel.model.pipeline.partition import balance, layer_time_costs, partition, stage_starts
from escala.parallel.model.pipeline.schedule import theoretical_bubble
from escala.parallel.model.strategies.base import ModelParallel, merge_stage_states
from escala.runtime.context import WorkerContext

IGNORE = -100  # cross_entropy's ignore_index: the label of a filler sample


def _pad(t: torch.Tensor, size: int, fill: int | None = None) -> torch.Tensor:
    """``t`` grown to ``size`` rows (copies of its first row, or ``fill``)."""
    short = size - t.shape[0]
    if short <= 0:
        return t
    extra = t[:1].expand(short, *t.shape[1:]).clone()
    if fill is not None:
        extra.fill_(fill)
    return torch.cat([t, extra])


class PipelineParallel(ModelParallel):
    name = "pipeline"
    owns_step = True

    @classmethod
    def check(cls, config) -> None:
        super().check(config)
        if config.batch_size % config.microbatches:
            raise UserError(
                f"batch_size {config.batch_size} does not split into {config.microbatches} equal micro-batches; "
                "make --batch-size a multiple of --microbatches"
            )
        if config.pipeline_schedule == "1f1b" and config.microbatches < config.pipeline:
            raise UserError(
                f"--pipeline-schedule 1f1b needs --microbatches >= --pipeline ({config.microbatches} < "
                f"{config.pipeline}); raise --microbatches or use gpipe"
            )

    @classmethod
    def check_model(cls, config, model: nn.Module, input_shape: tuple[int, ...]) -> None:
        # Cutting shares the modules (no copies): a cheap way to get partition's checks up front.
        partition(model, config.pipeline, cuts=list(config.pipeline_cuts) or None)

    def __init__(self, config=None):
        super().__init__(config)
        self.eval_batch_size = config.batch_size
        self.runner: PipelineStageRunner | None = None

    def split_model(self, model: nn.Module, ctx: WorkerContext, sample: torch.Tensor) -> nn.Module:
        cfg, k = self.config, self.layout.parts
        self._make_groups(ctx)
        if cfg.pipeline_cuts:
            stages = partition(model, k, cuts=list(cfg.pipeline_cuts))
        elif cfg.pipeline_balance == "time":
            # Timings differ from process to process: every stage must cut where rank 0 measured.
            micro = sample[: max(1, sample.shape[0] // cfg.microbatches)]
            costs = ctx.broadcast_object(layer_time_costs(model, micro))
            starts = balance(costs, k)
            stages = partition(model, k, cuts=starts[1:])
        else:
            stages = partition(model, k, by="params")
        self.cuts = stage_starts(model, stages)
        mine = stages[self.part]
        self.runner = PipelineStageRunner(
            mine,
            self.part,
            k,
            cfg.microbatches,
            schedule=cfg.pipeline_schedule,
            loss_fn=self._loss,
            group=self.model_group,
            device=ctx.device,
        )
        self.scale = 1.0
        return mine

    def _loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, target, reduction="sum", ignore_index=IGNORE) * self.scale

    def forward_backward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch, scale: float):
        runner, size = self.runner, self.config.batch_size
        if batch.has_filler:
            y = torch.where(batch.weights.to(y.device) > 0, y, torch.full_like(y, IGNORE))
        x, y = _pad(x, size), _pad(y, size, IGNORE)
        self.scale = scale
        loss = runner.step(x if runner.is_first else None, y if runner.is_last else None)
        return loss / scale if loss is not None else None

    @property
    def reports_metrics(self) -> bool:  # the loss and predictions exist on the last stage only
        return self.runner is None or self.runner.is_last

    def eval_forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        n = x.shape[0]
        out = self.runner.forward(_pad(x, self.config.batch_size) if self.runner.is_first else None)
        return out[:n] if out is not None else None

    def full_state_dict(self, model: nn.Module) -> dict[str, Any]:
        return merge_stage_states(self.ctx, model, self.layout.parts)

    def summary(self) -> dict[str, Any]:
        stats = self.ctx.all_gather_object(self.runner.stats())[: self.layout.parts]  # replica 0
        cfg = self.config
        return {
            **super().summary(),
            "pipeline": {
                "stages": self.layout.parts,
                "microbatches": cfg.microbatches,
                "schedule": cfg.pipeline_schedule,
                "stage_starts": self.cuts,
                **pipeline_bubble(stats, cfg.pipeline_schedule, cfg.microbatches),
                "bubble_theory": theoretical_bubble(self.layout.parts, cfg.microbatches),
            },
        }

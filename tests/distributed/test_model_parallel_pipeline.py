"""Pipeline parity on gloo: a K-stage pipeline (GPipe and 1F1B) gives the unsplit model's loss,
gradients, outputs and parameters after SGD steps (tolerance 1e-5, float32 summation order)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from escala.errors import UserError
from escala.models import build_model
from escala.parallel.model.pipeline import PipelineStageRunner, partition
from escala.runtime import spawn_workers

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(180)]

TOL = 1e-5
BATCH = 8


def _model():
    torch.manual_seed(0)
    return build_model("mlp", (12,), 4, hidden=(16, 16, 8))


def _data(step: int):
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(BATCH, 12, generator=g), torch.randint(0, 4, (BATCH,), generator=g)


def _loss(out, y):
    # Sum over the micro-batch, divided by the whole mini-batch: micro-batch gradients add up to
    # the gradient of the mean loss over the mini-batch.
    return F.cross_entropy(out, y, reduction="sum") / BATCH


def _close(a, b, what):
    err = (a - b).abs().max().item()
    assert err <= TOL, f"{what}: max abs difference {err:.2e} > {TOL}"


def _parity(ctx, schedule: str, microbatches: int, steps: int):
    k = ctx.world_size
    ref = _model()
    model = _model()
    mine = partition(model, k)[ctx.rank]
    ref_stage = partition(ref, k)[ctx.rank]
    runner = PipelineStageRunner(mine, ctx.rank, k, microbatches, schedule=schedule, loss_fn=_loss)
    opt = torch.optim.SGD(mine.parameters(), lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    for step in range(steps):
        x, y = _data(step)
        if step == 1:  # an evaluation between training steps must not break the next backward
            out = runner.forward(x if runner.is_first else None)
            if runner.is_last:
                _close(out, ref(x).detach(), f"{schedule} eval output between steps")
        opt.zero_grad()
        ref_opt.zero_grad()
        loss = runner.step(x if runner.is_first else None, y if runner.is_last else None)
        ref_loss = F.cross_entropy(ref(x), y)
        ref_loss.backward()
        if runner.is_last:
            _close(loss, ref_loss.detach(), f"{schedule} loss step {step}")
        else:
            assert loss is None
        for (name, p), q in zip(mine.named_parameters(), ref_stage.parameters()):
            _close(p.grad, q.grad, f"{schedule} stage {ctx.rank} grad {name} step {step}")
        opt.step()
        ref_opt.step()
    for (name, p), q in zip(mine.named_parameters(), ref_stage.parameters()):
        _close(p.detach(), q.detach(), f"{schedule} stage {ctx.rank} param {name} after {steps} steps")
    x, _ = _data(99)
    out = runner.forward(x if runner.is_first else None)
    if runner.is_last:
        _close(out, ref(x).detach(), f"{schedule} eval output")
    bubble = runner.bubble()
    assert 0.0 <= bubble < 1.0 or math.isnan(bubble), f"bubble {bubble} outside [0, 1)"


def _both(ctx):
    _parity(ctx, "gpipe", 4, 3)
    _parity(ctx, "1f1b", 4, 3)


def test_pipeline_two_stages_gpipe_and_1f1b_match_unsplit_model():
    spawn_workers(_both, 2, options={"timeout_s": 60})


def _three(ctx):
    _parity(ctx, "gpipe", 2, 2)  # fewer micro-batches than stages
    _parity(ctx, "1f1b", 4, 2)


@pytest.mark.slow
def test_pipeline_three_stages():
    spawn_workers(_three, 3, options={"timeout_s": 60})


def _uneven(ctx):
    runner = PipelineStageRunner(partition(_model(), 2)[ctx.rank], ctx.rank, 2, 3, loss_fn=_loss)
    x, y = _data(0)
    runner.step(x if runner.is_first else None, y if runner.is_last else None)


def test_batch_not_divisible_by_microbatches_is_a_user_error():
    with pytest.raises(UserError, match="does not split into 3 equal micro-batches"):
        spawn_workers(_uneven, 2, options={"timeout_s": 60})


def _wrong_world(ctx):
    PipelineStageRunner(partition(_model(), 3)[ctx.rank], ctx.rank, 3, 2, loss_fn=_loss)


def test_stage_count_must_match_the_group():
    with pytest.raises(UserError, match="3-stage pipeline needs 3 processes"):
        spawn_workers(_wrong_world, 2, options={"timeout_s": 60})


def test_1f1b_with_fewer_microbatches_than_stages_is_a_user_error():
    with pytest.raises(UserError, match="1f1b needs microbatches >= pipeline stages"):
        PipelineStageRunner(torch.nn.Sequential(), 0, 3, 2, schedule="1f1b")

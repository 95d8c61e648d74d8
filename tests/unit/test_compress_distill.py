"""Distillation: soft targets beat hard labels when data is scarce (Hinton et al. 2015), MUNGE helps more."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from escala.compress.distill import TemperatureScaled, munge, soft_targets, transfer_set
from escala.compress.pipeline import accuracy
from escala.compress.retrain import retrain, stage_config
from escala.data import DataSplit, TensorData, load_digits
from escala.models import build_model

BASE = {"dataset": "digits", "model": "mlp", "lr": 0.05, "progress": "none", "batch_size": 32}


def test_temperature_scaling_gradient_is_t_squared_ce():
    torch.manual_seed(0)
    z = torch.randn(4, 5, requires_grad=True)
    p = torch.softmax(torch.randn(4, 5), dim=1)
    t = 3.0
    wrapper = TemperatureScaled(torch.nn.Identity(), t).train()
    torch.nn.functional.cross_entropy(wrapper(z), p).backward()
    got = z.grad.clone()
    z.grad = None
    (t * t * torch.nn.functional.cross_entropy(z / t, p)).backward()
    torch.testing.assert_close(got, z.grad)
    assert torch.equal(wrapper.eval()(z), z)  # evaluation sees the plain logits


def test_ensemble_targets_are_mean_probabilities():
    a, b = torch.nn.Linear(3, 4), torch.nn.Linear(3, 4)
    x = torch.randn(6, 3)
    got = soft_targets([a, b], x, 2.0)
    want = (torch.softmax(a(x) / 2, 1) + torch.softmax(b(x) / 2, 1)) / 2
    torch.testing.assert_close(got, want.detach())
    torch.testing.assert_close(got.sum(1), torch.ones(6))


def test_munge_samples_live_between_neighbours():
    x = torch.rand(50, 1, 4, 4)
    out = munge(x, 120, p=0.5, s=1.0, seed=0)
    assert out.shape == (120, 1, 4, 4)
    assert not torch.isnan(out).any()
    same = munge(x, 50, p=0.0, seed=0)  # p = 0 swaps nothing: a permutation of the data
    assert torch.equal(torch.sort(same.flatten(1), dim=0)[0], torch.sort(x.flatten(1), dim=0)[0])
    assert not torch.equal(munge(x, 50, p=1.0, seed=0), same)


@pytest.mark.slow
def test_distillation_beats_hard_labels_on_scarce_data(tmp_path):
    data = load_digits()
    torch.manual_seed(0)
    teacher = build_model("mlp", (1, 8, 8), 10, hidden=(128, 64))
    retrain(teacher, data, stage_config({**BASE, "hidden": [128, 64]}, tmp_path / "t", epochs=10))
    assert accuracy(teacher, data.val) > 0.93
    fraction = 0.03  # 43 labelled digits: the regime where soft targets are known to help most
    n = len(data.train)
    idx = torch.from_numpy(np.random.default_rng(0).permutation(n)[: round(fraction * n)])
    scarce = DataSplit(
        "scarce", TensorData(data.train.x[idx], data.train.y[idx]), data.val, data.input_shape, 10
    )
    student_cfg = {**BASE, "hidden": [32]}

    def student():
        torch.manual_seed(1)
        return build_model("mlp", (1, 8, 8), 10, hidden=(32,))

    hard = student()
    retrain(hard, scarce, stage_config(student_cfg, tmp_path / "hard", epochs=60))
    soft = student()
    split = transfer_set([teacher], data, 4.0, 0.9, fraction, seed=0)
    assert len(split.train) == len(idx)
    retrain(TemperatureScaled(soft, 4.0), split, stage_config(student_cfg, tmp_path / "soft", epochs=60))
    munged = student()
    split = transfer_set([teacher], data, 4.0, 0.9, fraction, munge_samples=2000, seed=0)
    retrain(TemperatureScaled(munged, 4.0), split, stage_config(student_cfg, tmp_path / "munge", epochs=10))
    acc_hard, acc_soft, acc_munge = (accuracy(m, data.val) for m in (hard, soft, munged))
    assert acc_soft > acc_hard + 0.03, (acc_hard, acc_soft)
    assert acc_munge > acc_soft, (acc_soft, acc_munge)

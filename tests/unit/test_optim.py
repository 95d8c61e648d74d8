import math

import pytest
import torch

from escala.config import build_config
from escala.train.optim import build_optimizer, build_scheduler, lr_factor, scaled_lr


def test_linear_scaling_rule():
    cfg = build_config(None, {"lr": 0.1, "batch_size": 32, "workers": 8, "lr_scaling": "linear"})
    assert scaled_lr(cfg) == pytest.approx(0.8)
    ref = build_config(
        None, {"lr": 0.1, "batch_size": 32, "workers": 8, "lr_scaling": "linear", "reference_batch": 256}
    )
    assert scaled_lr(ref) == pytest.approx(0.1)


def test_gradual_warmup_goes_from_eta_to_k_eta():
    """Goyal et al. 2017: start at eta, reach k*eta after the warmup epochs, by equal increments."""
    cfg = build_config(
        None, {"lr": 0.1, "batch_size": 10, "workers": 4, "lr_scaling": "linear", "warmup_epochs": 2}
    )
    steps = 5
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model.parameters(), cfg)
    sched = build_scheduler(opt, cfg, steps)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[10] == pytest.approx(0.4)
    diffs = [b - a for a, b in zip(lrs[:10], lrs[1:11])]
    assert max(diffs) == pytest.approx(min(diffs))


def test_cosine_decays_to_zero_and_step_divides_by_ten():
    cos = build_config(None, {"epochs": 4, "schedule": "cosine"})
    assert lr_factor(0, cos, 10) == pytest.approx(1.0)
    assert lr_factor(20, cos, 10) == pytest.approx(0.5)
    assert lr_factor(40, cos, 10) == pytest.approx(0.0, abs=1e-12)
    step = build_config(None, {"schedule": "step", "step_epochs": 2})
    assert lr_factor(19, step, 10) == 1.0
    assert lr_factor(20, step, 10) == pytest.approx(0.1)
    assert math.isclose(lr_factor(45, step, 10), 0.01)


def test_adamw_is_chosen():
    cfg = build_config(None, {"optimizer": "adamw", "weight_decay": 0.01})
    opt = build_optimizer(torch.nn.Linear(2, 2).parameters(), cfg)
    assert isinstance(opt, torch.optim.AdamW)

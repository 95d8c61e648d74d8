"""Mixed precision through the one loop: dynamic loss scaling skips inf steps, flags reach the trainer."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

import escala
from escala.checkpoint import load_checkpoint
from escala.config import TrainConfig
from escala.errors import UserError
from escala.parallel.strategy import Strategy
from escala.precision.formats import make_format
from escala.precision.mixed import Precision
from escala.precision.simulate import FormatLinear, simulate_model


def _scaler_roundtrip(device):
    torch.manual_seed(0)
    model = nn.Linear(4, 2).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    prec = Precision(TrainConfig(precision="fp16"), torch.device(device))
    strategy = Strategy()
    x = torch.randn(8, 4, device=device)
    scale0 = prec.scaler.get_scale()

    # Step 1: an overflow (injected inf in a gradient) -> step skipped, scale halved.
    before = [p.detach().clone() for p in model.parameters()]
    hook = model.weight.register_hook(lambda g: torch.full_like(g, float("inf")))
    with prec.autocast():
        loss = model(x).float().pow(2).mean()
    prec.backward(loss)
    assert prec.step(opt, strategy) is False
    hook.remove()
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert prec.scaler.get_scale() == scale0 / 2 and prec.skipped_steps == 1

    # Step 2: clean gradients -> the step is taken, with the gradients unscaled.
    opt.zero_grad()
    with prec.autocast():
        loss = model(x).float().pow(2).mean()
    prec.backward(loss)
    assert prec.step(opt, strategy) is True
    assert not torch.equal(before[0], model.weight)
    ref = nn.Linear(4, 2).to(device)
    ref.load_state_dict({"weight": before[0], "bias": before[1]})
    ref(x).pow(2).mean().backward()
    # fp16 forward, so compare the unscaled gradient the optimizer applied with the fp32 one loosely.
    applied = (before[0] - model.weight.detach()) / 0.1
    assert torch.allclose(applied, ref.weight.grad, rtol=2e-2, atol=1e-3)
    assert prec.scaler.get_scale() == scale0 / 2  # growth only after 2000 clean steps
    state = prec.state_dict()
    assert state["skipped_steps"] == 1 and state["scaler"]["scale"] == scale0 / 2


def test_loss_scaling_recovers_from_injected_inf_cpu():
    _scaler_roundtrip("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_loss_scaling_recovers_from_injected_inf_gpu():
    _scaler_roundtrip("cuda")


def test_default_precision_is_a_pass_through():
    prec = Precision(TrainConfig(), torch.device("cpu"))
    assert not prec.active and not prec.scaler.is_enabled()
    calls = []
    strategy = types.SimpleNamespace(optimizer_step=lambda opt: calls.append(opt))
    assert prec.step("opt", strategy) and calls == ["opt"]
    assert prec.summary() == {"precision": "fp32"}


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"precision": "bf16", "simulate": "lns"}, "needs --precision fp32"),
        ({"kahan": True}, "add --simulate"),
        ({"simulate": "bf16", "kahan": True}, "simulate-scope all"),
    ],
)
def test_bad_combinations_are_one_line_errors(overrides, match):
    with pytest.raises(UserError, match=match):
        Precision(TrainConfig(**overrides), torch.device("cpu"))


def test_format_linear_matches_float_linear_for_a_fine_format():
    torch.manual_seed(0)
    lin = nn.Linear(16, 8)
    x = torch.randn(5, 16, requires_grad=True)
    ref = lin(x)
    ref.sum().backward()
    gx, gw, gb = x.grad.clone(), lin.weight.grad.clone(), lin.bias.grad.clone()
    x.grad = None
    lin.zero_grad()
    sim = FormatLinear(lin, make_format("lns", lns_frac_bits=14))
    out = sim(x)
    out.sum().backward()
    assert torch.allclose(out, ref, rtol=1e-3, atol=1e-3)
    for a, b in [(x.grad, gx), (lin.weight.grad, gw), (lin.bias.grad, gb)]:
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-3)
    coarse = FormatLinear(lin, make_format("fp8e4m3"))(x)
    assert not torch.allclose(coarse, ref, rtol=1e-3, atol=1e-3)  # a coarse format does differ


def test_simulate_all_keeps_state_dict_keys_and_puts_weights_on_grid():
    torch.manual_seed(0)
    model = escala.models.build_model("lenet5", (1, 8, 8), 10)
    keys = list(model.state_dict())
    fmt = make_format("bf16")
    sim = simulate_model(model, fmt, "all")
    assert list(model.state_dict()) == keys and "fc1" in sim.replaced and "conv1" in sim.replaced
    for p in model.parameters():
        assert torch.equal(p, fmt.quantize(p))
    out = model(torch.randn(2, 1, 8, 8))
    assert torch.equal(out, fmt.quantize(out))


def test_trainer_runs_simulated_lns_with_kahan_and_resumes_exactly(quick, tmp_path):
    quick.update(simulate="lns", simulate_scope="all", kahan=True, hidden=(16,), epochs=1, lr=0.1)
    whole = escala.train(**dict(quick, out=str(tmp_path / "whole"), max_steps=6))
    assert whole["simulate"] == "lns15" and whole["kahan"] is True
    escala.train(**dict(quick, out=str(tmp_path / "parts"), max_steps=3))
    escala.train(**dict(quick, out=str(tmp_path / "parts"), max_steps=6, resume=True))
    a = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "parts" / "checkpoints" / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    comp = a["precision"]["updates"]["compensation"]
    assert any(c is not None and bool((c != 0).any()) for c in comp)


@pytest.mark.slow
def test_trainer_bf16_autocast_learns(quick):
    quick.update(precision="bf16", epochs=3, lr=0.05)
    summary = escala.train(**quick)
    assert summary["precision"] == "bf16" and summary["val_acc"] > 0.85

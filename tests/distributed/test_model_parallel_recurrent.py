"""Stacked LSTM split by layers over processes, pipelined over time: same outputs, parameter
gradients and input gradient as ``nn.LSTM(num_layers=L)`` in one process (tolerance 1e-5)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from escala.errors import UserError
from escala.parallel.model.recurrent import PipelinedLSTM
from escala.runtime import spawn_workers

TOL = 1e-5
N, T, FEAT, HID = 3, 5, 4, 6


def _lstm(layers):
    torch.manual_seed(0)
    return nn.LSTM(FEAT, HID, num_layers=layers, batch_first=True)


def _close(a, b, what):
    err = (a - b).abs().max().item()
    assert err <= TOL, f"{what}: max abs difference {err:.2e} > {TOL}"


def _parity(ctx, layers):
    ref, mine = _lstm(layers), _lstm(layers)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(N, T, FEAT, generator=g)
    target = torch.randn(N, T, HID, generator=g)
    xr = x.clone().requires_grad_(True)
    ref_out, _ = ref(xr)
    ((ref_out - target) ** 2).sum().backward()

    stack = PipelinedLSTM(mine)
    out = stack.forward(x.clone().requires_grad_(True) if stack.first else None, batch=N, steps=T)
    if stack.last:
        _close(out, ref_out.detach(), "top-layer outputs")
        ((out - target) ** 2).sum().backward()
        gx = stack.backward(out.grad)
    else:
        assert out is None
        gx = stack.backward()
    if stack.first:
        _close(gx, xr.grad, "input gradient")
    per = layers // ctx.world_size
    for k in range(ctx.rank * per, (ctx.rank + 1) * per):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            p, q = getattr(mine, f"{name}_l{k}"), getattr(ref, f"{name}_l{k}")
            _close(p.grad, q.grad, f"grad {name}_l{k}")
        # Layers held elsewhere got no gradient here.
    others = [k for k in range(layers) if not ctx.rank * per <= k < (ctx.rank + 1) * per]
    assert all(getattr(mine, f"weight_ih_l{k}").grad is None for k in others)


def _cases(ctx):
    _parity(ctx, 2)  # one layer per process
    _parity(ctx, 4)  # two layers per process


@pytest.mark.distributed
@pytest.mark.timeout(180)
def test_pipelined_lstm_matches_stacked_lstm():
    spawn_workers(_cases, 2, options={"timeout_s": 60})


def _uneven(ctx):
    PipelinedLSTM(_lstm(3))


@pytest.mark.distributed
@pytest.mark.timeout(120)
def test_layers_not_divisible_by_processes_is_a_user_error():
    with pytest.raises(UserError, match="LSTM of 3 layers cannot be split evenly over 2 processes"):
        spawn_workers(_uneven, 2, options={"timeout_s": 60})

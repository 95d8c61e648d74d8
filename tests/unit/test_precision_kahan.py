"""Kahan-compensated updates keep what plain low-precision updates lose; the state checkpoints."""

from __future__ import annotations

import torch
from torch import nn

from escala.precision.formats import LNS, make_format
from escala.precision.kahan import KahanUpdates


def _descend(fmt, steps=100, lr=1e-3, **kw):
    """Minimise sum(w) from w = 1: every SGD update is -lr, below half an ulp of 1 in bf16/LNS8."""
    w = nn.Parameter(torch.ones(64))
    opt = torch.optim.SGD([w], lr=lr)
    updates = KahanUpdates(opt, fmt, **kw)
    for _ in range(steps):
        opt.zero_grad()
        w.sum().backward()
        opt.step()
    return w.detach(), updates


def test_plain_bf16_updates_are_lost_kahan_keeps_them():
    bf16 = make_format("bf16")  # ulp(1) = 2**-7: an update of 1e-3 rounds away
    plain, plain_updates = _descend(bf16, kahan=False)
    assert torch.equal(plain, torch.ones(64))
    assert plain_updates.lost_updates == 64 * 100
    kahan, _ = _descend(bf16, kahan=True)
    # The true result is 1 - 100 * 1e-3 = 0.9; Kahan is within one bf16 ulp of it (2**-8 below 1).
    assert torch.all((kahan - 0.9).abs() <= 2**-8)
    assert torch.all(kahan == kahan[0])


def test_kahan_in_lns_and_stochastic_rounding_as_the_alternative():
    lns = LNS(6, 6)  # relative spacing 2**(1/64) - 1 = 1.1 %
    plain, _ = _descend(lns, kahan=False)
    assert torch.equal(plain, torch.ones(64))
    kahan, _ = _descend(lns, kahan=True)
    assert torch.all((kahan - 0.9).abs() <= 0.9 * (2 ** (1 / 64) - 1))
    torch.manual_seed(0)
    sr, _ = _descend(make_format("bf16"), kahan=False, stochastic=True)
    # Stochastic rounding is right on average (each weight is a random walk around the true value).
    assert abs(float(sr.mean()) - 0.9) < 0.01
    assert float(sr.std()) > 0  # and, unlike Kahan, not exactly


def test_weights_stay_on_the_grid_and_compensation_stays_in_format():
    bf16 = make_format("bf16")
    w, updates = _descend(bf16, steps=7, kahan=True)
    assert torch.equal(w, bf16.quantize(w))
    c = updates.compensation[0]
    assert torch.equal(c, bf16.quantize(c)) and bool((c != 0).any())


def test_state_dict_round_trip_continues_identically():
    fmt = make_format("bf16")

    def run(split):
        torch.manual_seed(0)
        w = nn.Parameter(fmt.quantize(torch.randn(32)))
        opt = torch.optim.SGD([w], lr=1e-3, momentum=0.9)
        upd = KahanUpdates(opt, fmt, kahan=True)
        for step in range(20):
            if step == split:  # "resume": fresh optimizer and compensation from saved state
                state = (opt.state_dict(), upd.state_dict(), w.detach().clone())
                upd.remove()
                w = nn.Parameter(state[2])
                opt = torch.optim.SGD([w], lr=1e-3, momentum=0.9)
                opt.load_state_dict(state[0])
                upd = KahanUpdates(opt, fmt, kahan=True)
                upd.load_state_dict(state[1])
            opt.zero_grad()
            (w * torch.linspace(-1, 1, 32)).sum().backward()
            opt.step()
        return w.detach()

    assert torch.equal(run(split=-1), run(split=9))

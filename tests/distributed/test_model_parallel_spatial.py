"""Spatial (row-band) split of convolutions on gloo: same outputs and gradients as the unsplit layer
or network (tolerance 1e-5), for borders, stride, padding, dilation, uneven bands and a LeNet-5."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from escala.errors import UserError
from escala.models import build_model
from escala.parallel.model.spatial import SpatialParallel, bands, needed_rows
from escala.runtime import spawn_workers

TOL = 1e-5

# (in rows, kernel, stride, padding, dilation): odd heights give uneven bands; a tall kernel with
# few rows per band makes a halo reach past the nearest neighbour's band.
CASES = [
    (8, 3, 1, 1, 1),
    (9, 3, 2, 1, 1),
    (10, 5, 1, 2, 1),
    (11, 3, 1, 0, 1),
    (12, 3, 2, 0, 2),
    (7, 4, 3, 2, 1),
    (9, 7, 1, 3, 1),
    (6, 7, 1, 3, 1),  # with 3 parts, band 0 needs a row of band 2
]


def _close(a, b, what):
    err = (a - b).abs().max().item()
    assert err <= TOL, f"{what}: max abs difference {err:.2e} > {TOL}"


def _conv_net(k, s, p, d, pool: bool):
    torch.manual_seed(0)
    layers = [nn.Conv2d(2, 3, k, stride=s, padding=p, dilation=d), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2, stride=1, padding=1))
    return nn.Sequential(*layers, nn.Flatten(), nn.LazyLinear(4))


def _check(ctx, model_fn, shape, what):
    ref, split = model_fn(), model_fn()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, *shape, generator=g)
    ref(x)  # materialise lazy layers identically on both copies
    split(x)
    split.load_state_dict(ref.state_dict())
    sp = SpatialParallel(split, shape)
    out = sp(x)
    expect = ref(x)
    _close(out, expect, f"{what} output")
    y = torch.randint(0, 4, (3,), generator=g)
    F.cross_entropy(out, y).backward()
    F.cross_entropy(expect, y).backward()
    sp.sync_gradients()
    for (n, p), q in zip(split.named_parameters(), ref.parameters()):
        _close(p.grad, q.grad, f"{what} grad {n}")


def _all_cases(ctx):
    for h, k, s, p, d in CASES:
        for pool in (False, True):
            what = f"H={h} k={k} s={s} p={p} d={d} pool={pool} P={ctx.world_size}"
            _check(ctx, lambda k=k, s=s, p=p, d=d, pool=pool: _conv_net(k, s, p, d, pool), (2, h, 6), what)
    _check(ctx, lambda: build_model("lenet5", (1, 20, 20), 4), (1, 20, 20), "lenet5")


@pytest.mark.distributed
@pytest.mark.timeout(180)
def test_spatial_split_matches_unsplit_two_parts():
    spawn_workers(_all_cases, 2, options={"timeout_s": 60})


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_spatial_split_matches_unsplit_three_parts():
    spawn_workers(_all_cases, 3, options={"timeout_s": 60})


def _too_short(ctx):
    SpatialParallel(_conv_net(3, 4, 0, 1, False), (2, 6, 6))


@pytest.mark.distributed
@pytest.mark.timeout(120)
def test_more_parts_than_output_rows_is_a_user_error():
    with pytest.raises(UserError, match="outputs 1 rows, fewer than the 2 spatial parts"):
        spawn_workers(_too_short, 2, options={"timeout_s": 60})


def test_bands_and_needed_rows():
    assert bands(7, 3) == [(0, 3), (3, 5), (5, 7)]
    # 3x3, stride 1, pad 1: output rows 4..7 read input rows 3..8 (row 8 is padding for H=8).
    assert needed_rows((4, 8), 3, 1, 1, 1) == (3, 9)
    # stride 2, no padding, dilation 2: output rows 0..2 read 0..(2*2 + 2*2) inclusive.
    assert needed_rows((0, 3), 3, 2, 0, 2) == (0, 9)

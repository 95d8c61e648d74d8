"""Quantizers of the simulated formats at their edges, and LNS arithmetic against float arithmetic."""

from __future__ import annotations

import math

import pytest
import torch

from escala.errors import UserError
from escala.precision.formats import LNS, FixedPoint, make_format
from escala.precision.formats.base import Format

INF, NAN = float("inf"), float("nan")


def q(fmt, values, generic=False):
    x = torch.tensor(values, dtype=torch.float32)
    return (fmt.quantize_generic(x) if generic else fmt.quantize(x)).tolist()


# -- floating point: hand-computed edges, through the generic rounding formula ---------------------
@pytest.mark.parametrize(
    "name, x, expected",
    [
        # fp16: max 65504; overflow starts at max + ulp/2 = 65520; subnormals down to 2**-24.
        ("fp16", 65504.0, 65504.0),
        ("fp16", 65519.0, 65504.0),
        ("fp16", 65520.0, INF),
        ("fp16", -1e6, -INF),
        ("fp16", 1 + 2**-11, 1.0),  # tie: to even
        ("fp16", 1 + 3 * 2**-11, 1 + 2**-9),  # tie: to even (upwards)
        ("fp16", 2**-24, 2**-24),  # smallest subnormal
        ("fp16", 2**-25, 0.0),  # tie between 0 and 2**-24: to even (0)
        ("fp16", 1.01 * 2**-25, 2**-24),
        ("fp16", 3 * 2**-25, 2 * 2**-24),  # subnormal tie to even
        ("fp16", 1.4 * 2**-15, 717 * 2**-24),  # subnormal: 716.8 units of 2**-24
        # bf16: 8 bits of precision, fp32's exponent range.
        ("bf16", 1 + 2**-8, 1.0),
        ("bf16", 1 + 3 * 2**-8, 1 + 2**-6),
        ("bf16", 3.39e38, (2 - 2**-7) * 2.0**127),
        ("bf16", 3.4e38, INF),  # above max + ulp/2 = 3.3961e38
        ("bf16", 2**-133, 2**-133),
        ("bf16", 2**-134, 0.0),
        # fp8 e4m3: max 448, saturating, no infinity; subnormals down to 2**-9.
        ("fp8e4m3", 448.0, 448.0),
        ("fp8e4m3", 464.0, 448.0),
        ("fp8e4m3", 1e6, 448.0),
        ("fp8e4m3", -INF, -448.0),
        ("fp8e4m3", 17.0, 16.0),  # spacing 2 in [16, 32): tie to even
        ("fp8e4m3", 19.0, 20.0),
        ("fp8e4m3", 2**-9, 2**-9),
        ("fp8e4m3", 2**-10, 0.0),
        ("fp8e4m3", 3 * 2**-10, 2 * 2**-9),
        # fp8 e5m2: IEEE-like, max 57344, overflow to infinity at 61440.
        ("fp8e5m2", 57344.0, 57344.0),
        ("fp8e5m2", 61439.0, 57344.0),
        ("fp8e5m2", 61440.0, INF),
        ("fp8e5m2", 2**-16, 2**-16),
        ("fp8e5m2", 2**-17, 0.0),
        ("fp8e5m2", 1.125, 1.0),  # tie: to even
    ],
)
def test_float_edges(name, x, expected):
    fmt = make_format(name)
    assert q(fmt, [x], generic=True) == [expected]
    assert q(fmt, [-x], generic=True) == [-expected]  # symmetric in sign


@pytest.mark.parametrize("name", ["fp16", "bf16", "fp8e4m3", "fp8e5m2"])
def test_float_specials_and_signed_zero(name):
    fmt = make_format(name)
    out = torch.tensor(q(fmt, [0.0, -0.0, NAN, -fmt.min_subnormal / 3], generic=True))
    assert out[0] == 0 and not torch.signbit(out[0])
    assert out[1] == 0 and torch.signbit(out[1])
    assert math.isnan(out[2])
    assert out[3] == 0 and torch.signbit(out[3])  # underflow keeps the sign, as IEEE does
    assert q(fmt, [INF], generic=True) == [INF if fmt.overflow == "inf" else fmt.max]


@pytest.mark.parametrize("name", ["fp16", "bf16", "fp8e4m3", "fp8e5m2"])
def test_float_matches_pytorch_casts_bit_for_bit(name):
    fmt = make_format(name)
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(20000, generator=g) * 10.0**s for s in range(-12, 12, 2)])
    got, ref = fmt.quantize_generic(x), x.to(fmt.torch_dtype).float()
    assert torch.equal(got, ref)
    assert torch.equal(fmt.quantize(x), ref)


@pytest.mark.parametrize("fmt", [make_format("bf16"), make_format("fp8e5m2"), FixedPoint(3, 4), LNS(5, 3)])
def test_stochastic_rounding_is_unbiased_and_picks_a_neighbour(fmt):
    g = torch.Generator().manual_seed(1)
    x = torch.full((200000,), 1.3)
    near = fmt.quantize(torch.tensor([1.3]))
    out = fmt.quantize(x, stochastic=True, generator=g)
    assert len(out.unique()) == 2  # the two neighbours of 1.3
    assert float(out.min()) <= 1.3 <= float(out.max())
    assert abs(float(out.mean()) - 1.3) < 2e-3 * float(out.max() - out.min()) + 1e-4
    assert float(near) in out.unique().tolist()


def test_fixed_point_q3_4():
    fmt = FixedPoint(3, 4)  # step 1/16, range [-8, 8 - 1/16]
    assert q(fmt, [0.03, 0.04, 0.09375, 100.0, -100.0, 7.99]) == [0.0, 0.0625, 0.125, 7.9375, -8.0, 7.9375]
    out = torch.tensor(q(fmt, [-0.01, -0.0, NAN, INF, -INF]))
    assert not torch.signbit(out[0]) and not torch.signbit(out[1])  # one zero, no -0
    assert math.isnan(out[2]) and out[3] == 7.9375 and out[4] == -8.0
    with pytest.raises(UserError, match="fixed point"):
        FixedPoint(-1, 4)


# -- LNS ------------------------------------------------------------------------------------------
def test_lns_quantize_edges():
    fmt = LNS(int_bits=4, frac_bits=2)  # log2 in [-8, 7.75] in quarter steps
    got = q(fmt, [3.0, -3.0, 0.0, -0.0, 1e6, INF, -INF, 2**-8.1, 2**-8.2, 2**7.75, 1.0])
    assert got[:2] == pytest.approx([2**1.5, -(2**1.5)], rel=1e-6)  # log2 3 = 1.585 -> 1.5
    assert got[2] == 0.0 and got[3] == 0.0
    assert got[4:7] == pytest.approx([2**7.75, 2**7.75, -(2**7.75)], rel=1e-6)  # saturate
    assert got[7] == pytest.approx(2**-8, rel=1e-6)  # rounds up onto the smallest magnitude
    assert got[8] == 0.0  # log rounds below the range: flushed (no subnormals)
    assert got[9:] == pytest.approx([2**7.75, 1.0], rel=1e-6)
    assert math.isnan(q(fmt, [NAN])[0])
    with pytest.raises(UserError, match="lns"):
        LNS(int_bits=9)


def test_lns_multiply_adds_logs_exactly():
    fmt = LNS(int_bits=4, frac_bits=2)
    a, b = (
        torch.tensor([2**1.5, -(2**1.5), 2**5.0, 2**-5.0, 0.0]),
        torch.tensor([2**0.25, 2**0.25, 2**5.0, 2**-4.0, 3.0]),
    )
    out = fmt.mul(a, b).tolist()
    assert out[:2] == pytest.approx([2**1.75, -(2**1.75)], rel=1e-6)
    assert out[2] == pytest.approx(2**7.75, rel=1e-6)  # 2**10 saturates
    assert out[3] == 0.0 and out[4] == 0.0  # 2**-9 underflows; 0 * x = 0
    g = torch.Generator().manual_seed(0)
    fine = LNS(6, 8)
    x, y = fine.quantize(torch.randn(5000, generator=g)), fine.quantize(torch.randn(5000, generator=g))
    assert torch.equal(fine.mul(x, y), fine.quantize(x * y))  # product of grid values is on the grid


def test_lns_add_hand_values():
    fmt = LNS(int_bits=4, frac_bits=2)
    a = torch.tensor([1.0, 2**1.5, 1.0, 2.0, 3.0, 0.0])
    a = fmt.quantize(a)
    b = fmt.quantize(torch.tensor([1.0, 2**1.5, -1.0, -1.0, 0.0, -2.0]))
    out = fmt.add(a, b).tolist()
    assert out == pytest.approx([2.0, 2**2.5, 0.0, 1.0, float(a[4]), -2.0], rel=1e-6)


@pytest.mark.parametrize("mode", ["exact", "table"])
def test_lns_add_against_float_within_resolution(mode):
    fmt = LNS(6, 8, add=mode)
    g = torch.Generator().manual_seed(2)
    a, b = fmt.quantize(torch.randn(20000, generator=g)), fmt.quantize(torch.randn(20000, generator=g))
    exact = a.double() + b.double()
    keep = exact.abs() > 1e-3
    rel = ((fmt.add(a, b).double() - exact).abs() / exact.abs())[keep]
    half_step = 2 ** (2**-9) - 1  # rounding the log to nearest: at most half a grid step
    bound = half_step if mode == "exact" else 2 ** (2**-8) - 1  # table: within one step
    assert float(rel.max()) <= bound * (1 + 1e-3)
    if mode == "table":  # and the table agrees with the exact function almost everywhere
        assert float((fmt.add(a, b) != LNS(6, 8).add(a, b)).float().mean()) < 0.05


def test_lns_matmul_log_domain_equals_generic_tree_and_tracks_float():
    fmt = LNS(6, 10)
    g = torch.Generator().manual_seed(3)
    A = fmt.quantize(torch.rand(8, 37, generator=g) + 0.1)
    B = fmt.quantize(torch.rand(37, 5, generator=g) + 0.1)
    fast = fmt.matmul(A, B)
    assert torch.equal(fast, Format.matmul(fmt, A, B))  # log-domain tree == generic mul/add tree
    depth = math.ceil(math.log2(37))
    u = 2 ** (2**-11) - 1
    rel = ((fast.double() - (A.double() @ B.double())) / (A.double() @ B.double())).abs()
    assert float(rel.max()) <= (1 + u) ** (depth + 1) - 1  # positive terms: no cancellation

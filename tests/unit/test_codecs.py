"""Gradient codecs: the statistical property each one promises, exact packing, checkpointable state."""

import math

import pytest
import torch

from escala.errors import UserError
from escala.parallel.data.codecs import (
    QSGD,
    ErrorFeedback,
    TopK,
    bf16,
    build_codec,
    fp16,
    nbytes,
    without_momentum,
)
from escala.parallel.data.codecs.base import pack_bits, unpack_bits


def _vector(n=512, seed=0):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("bits", range(1, 9))
def test_bit_packing_round_trips(bits):
    codes = torch.randint(
        0, 2**bits, (1001,), dtype=torch.uint8, generator=torch.Generator().manual_seed(bits)
    )
    packed = pack_bits(codes, bits)
    assert packed.numel() == math.ceil(1001 * bits / 8)
    assert torch.equal(unpack_bits(packed, bits, 1001), codes)


def test_qsgd_is_unbiased_and_round_to_nearest_is_not():
    """Mean of T encodings: every coordinate within 5 standard errors of the input, where the standard
    deviation of one encoding is ||v||/s * sqrt(p(1-p)) with p the fractional part of s|v_i|/||v||.
    The same check on deterministic rounding to the nearest level (what QSGD avoids) must fail."""
    x, trials = _vector(256), 3000
    codec = QSGD(bits=3, bucket=256, seed=1)
    mean = torch.stack([codec.decode(codec.encode(x), 256) for _ in range(trials)]).mean(0)
    s, norm = codec.levels, x.norm()
    r = x.abs() / norm * s
    p = r - r.floor()
    limit = 5 * norm / s * torch.sqrt(p * (1 - p) / trials) + 1e-6
    assert bool(((mean - x).abs() <= limit).all()), float(((mean - x).abs() / limit).max())
    nearest = torch.sign(x) * torch.round(r) * norm / s
    assert bool(((nearest - x).abs() > limit).any())


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("kind", ["gaussian", "spike"])
def test_qsgd_variance_within_lemma_3_1(bits, kind):
    """E||Q(v)-v||^2 <= min(d/s^2, sqrt(d)/s) ||v||^2 (Alistarh et al. 2017), per bucket of d values."""
    d = 128
    v = (
        _vector(4 * d, seed=bits)
        if kind == "gaussian"
        else torch.zeros(4 * d).index_fill_(0, torch.tensor([3, 200]), 5.0)
    )
    codec = QSGD(bits=bits, bucket=d, seed=bits)
    trials = 400
    sq = torch.zeros(4)
    for _ in range(trials):
        q = codec.decode(codec.encode(v), v.numel())
        sq += ((q - v) ** 2).view(4, d).sum(1)
    empirical = sq / trials
    bound = codec.variance_bound(d) * (v.view(4, d) ** 2).sum(1)
    assert bool((empirical <= bound * 1.05 + 1e-9).all()), (empirical, bound)


def test_qsgd_keeps_zero_buckets_zero_and_exact_at_extremes():
    codec = QSGD(bits=4, bucket=4, seed=0)
    x = torch.tensor([0.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, -2.0])
    q = codec.decode(codec.encode(x), x.numel())
    assert torch.equal(q[:4], torch.zeros(4))
    torch.testing.assert_close(q[4:], x[4:])  # |v_i| = ||v||: level s exactly, no randomness left


def test_compressed_sizes_meet_the_issue_targets():
    n = 100_000
    x = _vector(n)
    fp32 = 4 * n
    assert nbytes(fp16().encode(x)) == fp32 // 2
    assert nbytes(bf16().encode(x)) == fp32 // 2
    assert fp32 / nbytes(QSGD(bits=4).encode(x)) >= 7.0
    assert fp32 / nbytes(TopK(0.01).encode(x)) >= 30.0


def test_half_precision_round_trips_within_their_precision():
    x = _vector(1000)
    torch.testing.assert_close(fp16().decode(fp16().encode(x), 1000), x, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(bf16().decode(bf16().encode(x), 1000), x, rtol=1e-2, atol=1e-3)
    wire = fp16().encode(x).view(torch.uint8)  # as it arrives over a point-to-point link
    torch.testing.assert_close(fp16().decode(wire, 1000), x, rtol=1e-3, atol=1e-4)


def test_topk_sends_the_largest_magnitudes():
    x = torch.tensor([0.1, -5.0, 0.2, 3.0, -0.3, 0.0, 1.0, 0.05, -0.01, 0.02])
    codec = TopK(0.2)
    out = codec.decode(codec.encode(x), 10)
    assert torch.equal(out, torch.tensor([0.0, -5.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]))


def test_topk_with_error_feedback_never_loses_gradient_mass():
    """sum of what was sent + the residual = sum of the inputs, after every step, per slot."""
    codec = ErrorFeedback(TopK(0.05))
    slots = [("w", 300), ("b", 20)]
    total_in, total_sent = torch.zeros(320), torch.zeros(320)
    for t in range(30):
        g = _vector(320, seed=t) * (1 + t % 3)
        total_in += g
        total_sent += codec.decode(codec.encode(g, slots), 320)
        residual = torch.cat([codec.residual["w"], codec.residual["b"]])
        torch.testing.assert_close(total_sent + residual, total_in, rtol=1e-5, atol=1e-5)
    assert float(residual.abs().sum()) > 0  # something was held back, so the identity is not trivial
    assert int((codec.decode(codec.encode(g, slots), 320) != 0).sum()) == 16


def test_momentum_correction_sending_everything_is_momentum_sgd():
    """Ratio 1 and no masking: the velocity sent each step is torch.optim.SGD's momentum buffer, so
    a momentum-free step on it is exactly momentum SGD (Lin et al. 2018, eq. 5 with nothing dropped)."""
    codec = ErrorFeedback(TopK(1.0), momentum=0.9, masking=False)
    w = torch.nn.Parameter(torch.zeros(50))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    for t in range(6):
        w.grad = _vector(50, seed=t)
        sent = codec.decode(codec.encode(w.grad), 50)
        opt.step()
        torch.testing.assert_close(sent, opt.state[w]["momentum_buffer"], rtol=1e-6, atol=1e-6)


def test_momentum_correction_follows_the_dgc_algorithm():
    """Against a line-by-line transcription of DGC's Algorithm (momentum correction + factor masking),
    per slot; and sent + residual = the sum of the velocities added, so no mass is lost."""
    m, ratio, slots = 0.9, 0.05, [("w", 300), ("b", 20)]
    codec = ErrorFeedback(TopK(ratio), momentum=m, masking=True)
    u, v, total_u, total_sent = torch.zeros(320), torch.zeros(320), torch.zeros(320), torch.zeros(320)
    for t in range(25):
        g = _vector(320, seed=t) * (1 + t % 3)
        sent = codec.decode(codec.encode(g, slots), 320)
        u = m * u + g  # u_t = m u_{t-1} + g_t
        total_u += u
        v = v + u  # v_t = v_{t-1} + u_t
        mask = torch.zeros(320, dtype=torch.bool)
        for lo, n in ((0, 300), (300, 20)):  # top-k per slot
            mask[lo + v[lo : lo + n].abs().topk(math.ceil(ratio * n)).indices] = True
        torch.testing.assert_close(sent, torch.where(mask, v, 0.0), rtol=1e-5, atol=1e-5)
        v, u = v.masked_fill(mask, 0.0), u.masked_fill(mask, 0.0)  # residual; momentum factor masking
        total_sent += sent
        residual = torch.cat([codec.residual["w"], codec.residual["b"]])
        torch.testing.assert_close(total_sent + residual, total_u, rtol=1e-4, atol=1e-4)
    assert int(mask[300:].sum()) == 1  # the small slot sent its own top 5%, not nothing


def test_topk_sparsity_warmup_follows_dgc_schedule():
    """25% -> 6.25% -> 1.5625% -> 1% over 30 steps (3 stages of 10), then the target; a message decodes
    whatever stage its receiver is in, because it carries its own k."""
    sender, receiver = TopK(0.01, warmup_steps=30), TopK(0.01, warmup_steps=30)
    x = _vector(1000)
    sent = []
    for _ in range(40):
        wire = sender.encode(x)
        sent.append(int((receiver.decode(wire, 1000) != 0).sum()))
        sender.advance()
    assert sent[:10] == [250] * 10 and sent[10:20] == [63] * 10
    assert sent[20:30] == [16] * 10 and sent[30:] == [10] * 10


def test_without_momentum_steps_plainly_and_restores_the_setting():
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.5, momentum=0.9)
    codec = ErrorFeedback(TopK(1.0), momentum=0.9)
    w.grad = torch.ones(3)
    with without_momentum(opt, codec):
        opt.step()
    assert opt.param_groups[0]["momentum"] == 0.9 and "momentum_buffer" not in opt.state[w]
    torch.testing.assert_close(w.detach(), torch.full((3,), 0.5))


def test_codec_state_round_trips_through_state_dict():
    makers = (
        lambda: ErrorFeedback(TopK(0.1)),
        lambda: ErrorFeedback(TopK(0.1, warmup_steps=4), momentum=0.9),
        lambda: QSGD(bits=4, seed=3),
    )
    for make in makers:
        a = make()
        for t in range(3):
            a.encode(_vector(600, seed=t))
            a.advance()
        b = make()
        b.load_state_dict(a.state_dict())
        x = _vector(600, seed=9)
        assert torch.equal(a.encode(x), b.encode(x))
        fresh = make()
        assert not torch.equal(fresh.encode(x), a.encode(x))  # the state really matters


def test_bad_codec_settings_are_one_line_errors():
    with pytest.raises(UserError, match="qsgd_bits"):
        build_codec("qsgd", qsgd_bits=9)
    with pytest.raises(UserError, match="topk_ratio"):
        build_codec("topk", topk_ratio=0.0)
    with pytest.raises(UserError, match="compress"):
        build_codec("zip")
    assert build_codec("none") is None

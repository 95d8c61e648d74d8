"""Gradient compression inside DDP (communication hooks) on 2 CPU ranks."""

import pytest
import torch

import escala
from escala.checkpoint import load_checkpoint

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(180)]


def _params(out):
    return load_checkpoint(f"{out}/checkpoints/last.pt")["model"]


def test_fp16_allreduce_halves_the_bytes_and_trains(quick, tmp_path):
    """fp16 all-reduce: half the bytes of fp32, close to (not bit-equal with) the fp32 run, and learns."""
    quick.update(epochs=3, workers=2, batch_size=16, lr=0.05)
    full = escala.train(**dict(quick, out=str(tmp_path / "fp32")))
    half = escala.train(**dict(quick, compress="fp16", out=str(tmp_path / "fp16")))
    assert half["bytes_sent_per_worker_step"] == pytest.approx(full["bytes_sent_per_worker_step"] / 2)
    assert half["compression_ratio"] == pytest.approx(2.0) and half["compress"] == "fp16"
    assert half["val_acc"] >= 0.9
    a, b = _params(tmp_path / "fp32"), _params(tmp_path / "fp16")
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the hook really ran
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0.05, atol=0.02)


@pytest.mark.parametrize("codec, ratio", [("qsgd", 7.0), ("topk", 30.0)])
def test_lossy_codecs_send_far_fewer_bytes_and_still_learn(quick, codec, ratio):
    quick.update(epochs=3, workers=2, batch_size=16, lr=0.05, compress=codec, topk_ratio=0.01)
    summary = escala.train(**quick)
    assert summary["compression_ratio"] >= ratio
    assert summary["val_acc"] >= 0.7

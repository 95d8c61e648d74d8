"""Local SGD on 2 CPU ranks: H=1 is synchronous SGD; larger H communicates less and still learns."""

import pytest
import torch

import escala
from escala.checkpoint import load_checkpoint
from escala.errors import UserError

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(180)]


def _params(out):
    return load_checkpoint(f"{out}/checkpoints/last.pt")["model"]


def test_average_every_step_equals_synchronous_sgd(quick, tmp_path):
    """H=1 with momentum SGD: 2 workers with batch 16 end where 1 worker with batch 32 does after 60 steps
    (across an epoch boundary). Momentum is linear, so averaging parameters alone suffices; tolerance
    1e-5 covers the order of float sums."""
    quick.update(hidden=(64, 32), epochs=3, max_steps=60, momentum=0.9)
    escala.train(**dict(quick, workers=1, batch_size=32, out=str(tmp_path / "ref")))
    two = escala.train(
        **dict(
            quick, workers=2, batch_size=16, strategy="localsgd", average_every=1, out=str(tmp_path / "h1")
        )
    )
    assert two["strategy"] == "localsgd" and two["averages"] == 60
    a, b = _params(tmp_path / "ref"), _params(tmp_path / "h1")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-5, msg=name)


def test_averaging_every_four_steps_sends_a_quarter_and_learns(quick, tmp_path):
    quick.update(epochs=3, workers=2, batch_size=16, strategy="localsgd")
    h1 = escala.train(**dict(quick, average_every=1, out=str(tmp_path / "h1")))
    h4 = escala.train(**dict(quick, average_every=4, average_optimizer=True, out=str(tmp_path / "h4")))
    assert h4["val_acc"] >= 0.85
    # Averaging momentum too doubles each message; every 4 steps quarters their number.
    assert h4["bytes_sent_per_worker_step"] == pytest.approx(h1["bytes_sent_per_worker_step"] / 2, rel=0.1)
    a, b = _params(tmp_path / "h1"), _params(tmp_path / "h4")
    assert any(not torch.allclose(a[k], b[k]) for k in a)  # H really changed the trajectory


def test_localsgd_rejects_compression(quick):
    with pytest.raises(UserError, match="compress"):
        escala.train(**dict(quick, strategy="localsgd", compress="fp16", workers=2))

"""Hogwild on 2 CPU processes sharing one model."""

import pytest
import torch

import escala
from escala.checkpoint import load_checkpoint
from escala.errors import UserError
from escala.models import build_model

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(180)]


def test_two_processes_update_one_shared_model_and_learn_digits(quick, tmp_path):
    """Proof of sharing: the launcher's own module holds the trained weights afterwards (with private
    replicas, as under allreduce, it keeps its initial ones). Both processes' updates count, and the
    lock-free model reaches >= 90% validation accuracy on digits."""
    torch.manual_seed(0)
    model = build_model("mlp", (1, 8, 8), 10, hidden=(64,))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    quick.pop("model")
    quick.update(epochs=5, workers=2, batch_size=16, lr=0.05, strategy="hogwild")
    summary = escala.train(model, **quick)
    assert summary["val_acc"] >= 0.9
    assert summary["updates"] == 2 * summary["steps"]
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved[name]), name
        assert not torch.equal(value, initial[name]), name


def test_replicas_stay_private_under_allreduce(quick):
    torch.manual_seed(0)
    model = build_model("mlp", (1, 8, 8), 10, hidden=(64,))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    quick.pop("model")
    escala.train(model, **dict(quick, epochs=1, workers=2, batch_size=16))
    assert all(torch.equal(v, initial[k]) for k, v in model.state_dict().items())


def test_hogwild_refuses_compression(quick):
    with pytest.raises(UserError, match="compress"):
        escala.train(**dict(quick, strategy="hogwild", compress="qsgd", workers=2))

"""The one training loop in a single process: learning, the output contract, resume, the Python API."""

import json

import pytest
import torch
from torch import nn

import escala
import escala.data
from escala.checkpoint import load_checkpoint
from escala.data import TensorData
from escala.errors import UserError
from escala.metrics import read_jsonl


def _params(out):
    return load_checkpoint(f"{out}/checkpoints/last.pt")["model"]


def test_learns_digits_and_writes_the_output_contract(quick, tmp_path):
    quick.update(epochs=4, tensorboard=True)
    summary = escala.train(**quick)
    out = tmp_path / "run"
    assert summary["val_acc"] >= 0.9
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    for key in ("epoch", "train_loss", "val_loss", "val_acc", "samples_per_s", "wall_s"):
        assert key in records[0]
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    saved = json.loads((out / "summary.json").read_text())
    for key in ("val_acc", "val_loss", "epochs", "workers", "strategy", "wall_s", "samples_per_s"):
        assert key in saved
    assert saved["workers"] == 1 and saved["strategy"] == "allreduce" and saved["epochs"] == 4
    assert (out / "checkpoints" / "last.pt").is_file()
    assert any((out / "tb").iterdir())


def test_resume_mid_epoch_matches_an_uninterrupted_run(quick, tmp_path):
    quick.update(epochs=3, dropout=0.2)  # dropout makes the restored RNG state matter
    whole = dict(quick, out=str(tmp_path / "whole"))
    escala.train(**whole)
    parts = dict(quick, out=str(tmp_path / "parts"), max_steps=70)  # 45 steps/epoch: stops inside epoch 2
    first = escala.train(**parts)
    assert first["steps"] == 70
    escala.train(**dict(parts, max_steps=0, resume=True))
    a, b = _params(tmp_path / "whole"), _params(tmp_path / "parts")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["epoch"] for r in read_jsonl(tmp_path / "parts" / "metrics.jsonl")] == [1, 2, 3]


def test_existing_run_is_never_overwritten(quick, tmp_path):
    escala.train(**quick)
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    before = ckpt.read_bytes()
    with pytest.raises(UserError, match="already holds a run"):
        escala.train(**quick)
    assert ckpt.read_bytes() == before
    escala.train(**dict(quick, overwrite=True))


def test_damaged_checkpoint_stops_resume_and_stays_as_it_was(quick, tmp_path):
    escala.train(**quick)
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    damaged = ckpt.read_bytes()
    with pytest.raises(UserError, match="cannot be read"):
        escala.train(**dict(quick, resume=True, epochs=3))
    assert ckpt.read_bytes() == damaged


def test_resume_refuses_a_changed_setting(quick):
    escala.train(**quick)
    with pytest.raises(UserError, match="field 'lr' is 0.5"):
        escala.train(**dict(quick, resume=True, lr=0.5))


class Tiny(nn.Module):
    def __init__(self, inputs: int, classes: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(inputs, 16), nn.Tanh(), nn.Linear(16, classes))

    def forward(self, x):
        return self.net(x)


class PlainDataset(torch.utils.data.Dataset):
    """Not a TensorData: exercises the generic item-by-item path."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = [torch.randn(4, generator=g) for _ in range(n)]

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.x[i][0] > 0)


def test_users_own_model_and_dataset(tmp_path):
    summary = escala.train(
        Tiny(4, 2),
        (PlainDataset(200, 0), PlainDataset(100, 1)),
        epochs=15,
        lr=0.1,
        batch_size=16,
        out=str(tmp_path / "own"),
        progress="none",
        tensorboard=False,
    )
    assert summary["val_acc"] >= 0.9
    assert summary["params"] == sum(p.numel() for p in Tiny(4, 2).parameters())


def test_tensor_data_and_a_model_factory(tmp_path):
    x = torch.randn(300, 2)
    y = (x[:, 0] * x[:, 1] > 0).long()
    data = escala.data.as_split(TensorData(x[:200], y[:200]), TensorData(x[200:], y[200:]))
    summary = escala.train(
        lambda shape, classes: nn.Sequential(nn.Linear(shape[0], 32), nn.ReLU(), nn.Linear(32, classes)),
        data,
        epochs=30,
        lr=0.05,
        out=str(tmp_path / "xor"),
        progress="none",
        tensorboard=False,
    )
    assert summary["val_acc"] >= 0.85

"""``escala compress`` end to end: a real checkpoint from the training loop in, summary.json out."""

from __future__ import annotations

import json

import pytest
import torch

from escala.cli.main import main
from escala.compress import load_compressed
from escala.compress.pipeline import accuracy
from escala.config import build_config
from escala.data import load_digits
from escala.train import run_training


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    config = build_config(
        None,
        {
            "model": "lenet300",
            "epochs": 6,
            "lr": 0.05,
            "out": str(out),
            "progress": "none",
            "tensorboard": False,
        },
    )
    run_training(config)
    return out / "checkpoints" / "last.pt"


@pytest.mark.slow
def test_prune_share_huffman_int8(checkpoint, tmp_path):
    out = tmp_path / "dc"
    args = [
        "compress",
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        "--prune",
        "0.9",
        "--prune-rounds",
        "2",
        "--retrain-epochs",
        "2",
        "--share-bits",
        "5",
        "--share-epochs",
        "1",
        "--huffman",
        "--int8",
        "dynamic",
    ]
    assert main(args) == 0
    s = json.loads((out / "summary.json").read_text())
    for key in (
        "size_bytes_before",
        "size_bytes_after",
        "compression_ratio",
        "val_acc_before",
        "val_acc_after",
        "layers",
    ):
        assert key in s
    assert [r["layer"] for r in s["layers"]] == ["fc1", "fc2", "fc3", "total"]
    assert s["layers"][-1]["density"] == pytest.approx(0.1, abs=0.01)
    assert s["layers"][-1]["weight_bits_pq"] == 5.0 and s["layers"][-1]["weight_bits_pqh"] < 5.0
    # the file is really smaller and reloads to a model with the accuracy the summary states
    assert s["file"]["size_bytes"] == (out / "model.escz").stat().st_size < s["size_bytes_before"] / 15
    model = load_compressed(out / "model.escz")
    assert accuracy(model, load_digits().val) == s["file"]["val_acc"]
    assert s["file"]["val_acc"] >= s["val_acc_before"] - 0.05
    assert s["size_bytes_after"] == (out / "model_int8.pt").stat().st_size
    assert set(s["speed"]["batch1"]) >= {"original fp32", "compressed sparse CSR", "int8"}
    assert (out / "stages" / "prune2" / "checkpoints" / "last.pt").exists()
    # nothing is overwritten without --overwrite
    with pytest.raises(SystemExit) as err:
        main(args)
    assert err.value.code == 2


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--prune", "0.5", "--prune-layers", "fc7"], "layer 'fc7' does not exist"),
        (["--share-bits", "17"], "between 1 and 16, got 17"),
        (["--share-bits", "0"], "the recipe does nothing"),
    ],
)
def test_clear_errors(checkpoint, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as err:
        main(["compress", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "x"), *extra])
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "x").exists()


def test_missing_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "compress",
                "--checkpoint",
                str(tmp_path / "no.pt"),
                "--out",
                str(tmp_path / "o"),
                "--prune",
                "0.5",
            ]
        )
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_structured_and_distill_from_the_cli(checkpoint, tmp_path):
    out = tmp_path / "st"
    assert (
        main(
            [
                "compress",
                "--checkpoint",
                str(checkpoint),
                "--out",
                str(out),
                "--structured",
                "0.5",
                "--retrain-epochs",
                "1",
                "--no-speed",
            ]
        )
        == 0
    )
    s = json.loads((out / "summary.json").read_text())
    assert s["structured"]["widths"] == {"fc1": 150, "fc2": 50}
    assert load_compressed(out / "model.escz").fc1.out_features == 150
    assert "speed" not in s
    out2 = tmp_path / "kd"
    assert (
        main(
            [
                "compress",
                "--checkpoint",
                str(checkpoint),
                "--out",
                str(out2),
                "--distill-from",
                str(checkpoint),
                "--distill-epochs",
                "1",
                "--no-speed",
            ]
        )
        == 0
    )
    s2 = json.loads((out2 / "summary.json").read_text())
    assert s2["distill"]["transfer_samples"] == 1437 and torch.tensor(s2["val_acc_after"]) > 0.5

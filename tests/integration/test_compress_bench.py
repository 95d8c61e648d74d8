"""``escala bench compress --dataset/--data-dir`` and ``escala compress --workers 2``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from escala.cli.main import main
from escala.config import build_config
from escala.data import write_idx
from escala.train import run_training


def _write_mnist(directory, n_train=40, n_test=20):
    """Four tiny IDX files in MNIST's layout (random 28x28 images, labels 0-9)."""
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    write_idx(directory / "train-images-idx3-ubyte", rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8))
    write_idx(directory / "train-labels-idx1-ubyte", (np.arange(n_train) % 10).astype(np.uint8))
    write_idx(directory / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8))
    write_idx(directory / "t10k-labels-idx1-ubyte", (np.arange(n_test) % 10).astype(np.uint8))
    return directory


def _one_line_error(capsys, argv, message):
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--dataset", "mnist", "--data-dir", "{tmp}/nowhere"], "nowhere does not exist"),
        (["--dataset", "mnist"], "--dataset mnist needs --data-dir"),
        (["--dataset", "digits", "--data-dir", "{tmp}"], "only for --dataset mnist"),
        (["--dataset", "cifar"], "invalid choice: 'cifar'"),
    ],
)
def test_bench_data_errors_are_one_line(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.delenv("ESCALA_MNIST_DIR", raising=False)
    argv = ["bench", "compress", "--docs", "", *(a.format(tmp=tmp_path) for a in extra)]
    _one_line_error(capsys, argv, message)


def test_bench_data_dir_with_a_missing_file(tmp_path, capsys):
    folder = _write_mnist(tmp_path / "mnist")
    (folder / "t10k-labels-idx1-ubyte").unlink()
    argv = ["bench", "compress", "--docs", "", "--data-dir", str(folder)]
    _one_line_error(capsys, argv, "t10k-labels-idx1-ubyte")


def test_precision_bench_takes_the_same_flags(tmp_path, capsys):
    argv = ["bench", "precision", "--docs", "", "--dataset", "mnist", "--data-dir", str(tmp_path / "none")]
    _one_line_error(capsys, argv, "none does not exist")


def test_a_benchmark_without_data_refuses_the_flag(capsys):
    _one_line_error(
        capsys,
        ["bench", "allreduce", "--docs", "", "--data-dir", "x"],
        "benchmark allreduce does not take --data-dir; benchmarks that do: compress,",
    )


@pytest.mark.slow
def test_bench_compress_runs_on_mnist_files(tmp_path, monkeypatch):
    """The LeNet rows run end to end on IDX files given by --data-dir (other sections stubbed: timing)."""
    import escala.bench.compress as bench

    for section in ("int8_section", "sparse_section", "distill_section"):
        monkeypatch.setattr(bench, section, lambda *a, **k: "skipped in this test")
    folder = _write_mnist(tmp_path / "mnist")
    docs = tmp_path / "benchmarks.md"
    argv = ["bench", "compress", "--quick", "--dataset", "mnist", "--data-dir", str(folder)]
    assert main([*argv, "--docs", str(docs)]) == 0
    text = docs.read_text()
    assert "lenet300 (escala, mnist)" in text and "lenet5 (escala, mnist)" in text
    # 28x28 inputs: LeNet-300-100 has MNIST's 266K weights (the paper's 1070KB), not digits' 50K
    assert "| fc1 | 235.2K |" in text


@pytest.mark.slow
def test_compress_retrains_with_two_workers(tmp_path):
    """Centroid fine-tuning in 2 spawned workers on the original model's soft targets.

    Shared layers and the temperature wrapper cross the process boundary.
    """
    train = tmp_path / "train"
    config = {"model": "mlp", "hidden": [32], "epochs": 2, "out": str(train), "progress": "none"}
    run_training(build_config(None, {**config, "tensorboard": False}))
    out = tmp_path / "dc"
    argv = ["compress", "--checkpoint", str(train / "checkpoints" / "last.pt"), "--out", str(out)]
    extra = ["--prune", "0.6", "--retrain-epochs", "0", "--share-bits", "3", "--share-epochs", "1"]
    assert main([*argv, *extra, "--workers", "2", "--retrain-distill", "--no-speed"]) == 0
    s = json.loads((out / "summary.json").read_text())
    stage = json.loads((out / "stages" / "share" / "summary.json").read_text())
    assert stage["workers"] == 2
    fine_tuned = {st["stage"]: st["val_acc"] for st in s["stages"]}
    assert fine_tuned["share + centroid fine-tune"] > 0.5
    for row in s["layers"][:-1]:  # masks held through the 2-worker run; at most 2^3 - 1 shared values
        assert row["density"] == pytest.approx(0.4, abs=0.01)
        assert row["weight_bits_pq"] == 3.0

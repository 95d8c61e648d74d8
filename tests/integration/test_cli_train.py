"""``escala train`` as a user runs it: exit statuses, one-line errors, nothing lost."""

import json
import subprocess
import sys

import pytest

from escala.data import write_idx

QUICK = ["--epochs", "1", "--hidden", "16", "--progress", "plain", "--no-tensorboard"]


def escala(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "escala", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def one_line_error(done, needle):
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert needle in lines[0], lines[0]


def test_help_lists_every_field():
    done = escala("train", "--help")
    assert done.returncode == 0
    for flag in ("--dataset", "--data-dir", "--model", "--epochs", "--batch-size", "--lr", "--optimizer",
                 "--workers", "--strategy", "--seed", "--out", "--resume", "--warmup-epochs", "--lr-scaling"):
        assert flag in done.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--lr", "abc"], "field 'lr' must be a number"),
        (["--model", "vgg"], "field 'model' must be one of"),
        (["--workers", "0"], "field 'workers' must be >= 1"),
        (["--colour", "red"], "unrecognized arguments: --colour red"),
        (["--dataset", "mnist"], "field 'data_dir' is required"),
        (["--config", "nope.toml"], "config file nope.toml does not exist"),
    ],
)
def test_bad_input_is_one_line_and_status_2(tmp_path, args, needle):
    one_line_error(escala("train", *QUICK, "--out", str(tmp_path / "o"), *args), needle)
    assert not (tmp_path / "o").exists()


def test_missing_and_malformed_mnist_files_are_named(tmp_path):
    data = tmp_path / "mnist"
    data.mkdir()
    one_line_error(escala("train", *QUICK, "--dataset", "mnist", "--data-dir", str(data), "--out", str(tmp_path / "o")),
                   "train-images-idx3-ubyte")
    import numpy as np

    write_idx(data / "train-images-idx3-ubyte", np.zeros((4, 28, 28), np.uint8))
    write_idx(data / "train-labels-idx1-ubyte", np.zeros(4, np.uint8))
    write_idx(data / "t10k-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8))
    (data / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01")  # says 5, has 1
    one_line_error(escala("train", *QUICK, "--dataset", "mnist", "--data-dir", str(data), "--out", str(tmp_path / "o")),
                   "t10k-labels-idx1-ubyte")


def test_config_file_with_unknown_key(tmp_path):
    cfg = tmp_path / "job.toml"
    cfg.write_text("epochs = 1\nlearning_rate = 0.1\n")
    one_line_error(escala("train", "--config", str(cfg), "--out", str(tmp_path / "o")), "unknown key 'learning_rate'")


def test_run_then_refuse_to_clobber_then_resume(tmp_path):
    out = tmp_path / "run"
    done = escala("train", *QUICK, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "epoch 1/1" in done.stdout and "\x1b[" not in done.stdout  # plain lines when not on a terminal
    before = (out / "checkpoints" / "last.pt").read_bytes()
    one_line_error(escala("train", *QUICK, "--out", str(out)), "already holds a run")
    assert (out / "checkpoints" / "last.pt").read_bytes() == before
    done = escala("train", "--epochs", "2", "--hidden", "16", "--progress", "plain", "--no-tensorboard", "--out",
                  str(out), "--resume")
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2


def test_truncated_checkpoint_on_resume(tmp_path):
    out = tmp_path / "run"
    assert escala("train", *QUICK, "--out", str(out)).returncode == 0
    ckpt = out / "checkpoints" / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:500])
    one_line_error(escala("train", *QUICK, "--out", str(out), "--resume"), "last.pt cannot be read")
    assert len(ckpt.read_bytes()) == 500

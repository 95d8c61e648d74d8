"""Synchronous data parallelism on 2 CPU ranks over gloo."""

import os
import subprocess
import sys

import pytest
import torch
from dying import DiesOnRankOne

import escala
from escala.checkpoint import load_checkpoint
from escala.runtime import WorkerFailed

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(180)]


def _params(out):
    return load_checkpoint(f"{out}/checkpoints/last.pt")["model"]


def test_two_workers_with_half_batch_equal_one_worker(quick, tmp_path):
    """N workers with per-worker batch B/N end where 1 worker with batch B does (k = 60 steps, crossing an
    epoch boundary and the short last batch). Tolerance 1e-5: only the order of float sums differs."""
    quick.update(hidden=(64, 32), epochs=3, max_steps=60, momentum=0.9)
    escala.train(**dict(quick, workers=1, batch_size=32, out=str(tmp_path / "one")))
    two = escala.train(**dict(quick, workers=2, batch_size=16, out=str(tmp_path / "two")))
    assert two["workers"] == 2 and two["steps"] == 60
    a, b = _params(tmp_path / "one"), _params(tmp_path / "two")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-5, msg=name)


def test_two_workers_resume_matches_uninterrupted(quick, resume_matches_whole_run):
    resume_matches_whole_run(dict(quick, epochs=2, workers=2, batch_size=16), stop_at=30)


def test_dead_worker_ends_the_job_naming_its_rank(quick):
    quick.update(workers=2, batch_size=16, timeout_s=60)
    quick.pop("model")
    with pytest.raises(WorkerFailed, match=r"worker rank 1 was killed by SIGKILL"):
        escala.train(DiesOnRankOne(), **quick)


@pytest.mark.slow
@pytest.mark.parametrize(
    "procs, extra, workers, min_acc",
    [
        (2, [], 2, 0.85),  # 2 all-reduce workers
        (3, ["--strategy", "paramserver", "--servers", "1"], 2, 0.5),  # 1 server + 2 async workers
        (2, ["--pipeline", "2", "--microbatches", "2"], 1, 0.85),  # 1 replica of 2 pipeline stages
    ],
    ids=["allreduce", "paramserver", "pipeline"],
)
def test_same_entry_point_under_torchrun(tmp_path, procs, extra, workers, min_acc):
    out = tmp_path / "torchrun"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(procs),
        "-m",
        "escala",
        "train",
        *extra,
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--hidden",
        "32",
        "--lr",
        "0.02",
        "--progress",
        "plain",
        "--no-tensorboard",
        "--out",
        str(out),
    ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=150, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    summary = json.loads((out / "summary.json").read_text())
    assert summary["workers"] == workers and summary["val_acc"] > min_acc
    if "--pipeline" in extra:
        assert summary["processes"] == 2 and summary["layout"]["model_groups"] == [[0, 1]]
    if "paramserver" in extra:
        assert summary["staleness_mean"] >= 0.0

"""Asynchronous SGD against sharded parameter servers: workers and servers are CPU processes on gloo."""

import os
import signal

import pytest
import torch
import torch.distributed as dist
from torch import nn

import escala
from escala.checkpoint import load_checkpoint
from escala.runtime import WorkerFailed

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(180)]


def _params(out):
    return load_checkpoint(f"{out}/checkpoints/last.pt")["model"]


def test_one_worker_two_servers_equal_plain_sgd(quick, tmp_path):
    """One worker has no one to be stale against: 2 servers, each stepping momentum SGD on half of the
    flat parameters, give the single-process parameters after 60 steps (elementwise identical math)."""
    quick.update(hidden=(64, 32), epochs=3, max_steps=60, momentum=0.9, weight_decay=1e-4)
    escala.train(**dict(quick, out=str(tmp_path / "ref")))
    ps = escala.train(**dict(quick, strategy="paramserver", servers=2, out=str(tmp_path / "ps")))
    assert ps["staleness_max"] == 0 and ps["updates_per_server"] == 60 and ps["servers"] == 2
    a, b = _params(tmp_path / "ref"), _params(tmp_path / "ps")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-6, msg=name)


def test_two_async_workers_learn_digits(quick):
    quick.update(epochs=4, workers=2, servers=2, batch_size=16, lr=0.05, strategy="paramserver")
    summary = escala.train(**quick)
    assert summary["val_acc"] >= 0.9
    assert summary["updates_per_server"] == 2 * summary["steps"]  # every push of both workers applied


@pytest.mark.slow
def test_staleness_bound_holds_and_without_it_staleness_grows(quick, tmp_path):
    """Worker 1 sleeps 200 ms per step (long enough to stay the slow one on a loaded machine). Unbounded, worker 0 races ahead and worker 1's updates arrive
    many versions stale. With bound s=1 no worker is released more than 1 push ahead of the slowest,
    and the staleness seen on the server stays within (W-1)(2s+1) = 3 versions."""
    quick.update(epochs=1, max_steps=20, workers=2, batch_size=16, strategy="paramserver")
    quick.update(straggler_delay=0.2, straggler_ranks=(1,))
    free = escala.train(**dict(quick, out=str(tmp_path / "free")))
    assert free["staleness_max"] > 3 and free["clock_gap_max"] > 1, free
    ssp = escala.train(**dict(quick, staleness_bound=1, out=str(tmp_path / "ssp")))
    assert ssp["clock_gap_max"] <= 1 and ssp["staleness_max"] <= 3
    assert ssp["held_pushes"] > 0  # the bound really made the fast worker wait


def test_resume_restores_the_servers(quick, tmp_path):
    """One worker is deterministic, so stop-and-resume equals one whole run only if the servers' shards
    and momentum came back from the checkpoint."""
    quick.update(epochs=2, strategy="paramserver", servers=2, push_every=2, staleness_lr=True)
    escala.train(**dict(quick, out=str(tmp_path / "whole")))
    escala.train(**dict(quick, out=str(tmp_path / "parts"), max_steps=31))
    escala.train(**dict(quick, out=str(tmp_path / "parts"), resume=True))
    a, b = _params(tmp_path / "whole"), _params(tmp_path / "parts")
    assert all(torch.equal(a[k], b[k]) for k in a)


class DiesOnRankOne(nn.Module):
    """Test-only model: process 1 (a worker) kills itself at its 5th training forward pass."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.training and dist.is_initialized() and dist.get_rank() == 1 and self.calls == 5:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.fc(x.flatten(1))


def test_killed_worker_is_reported_by_rank_without_a_hang(quick):
    quick.pop("model")
    quick.update(workers=2, servers=1, batch_size=16, strategy="paramserver", timeout_s=60)
    with pytest.raises(WorkerFailed, match=r"worker rank 1 was killed by SIGKILL"):
        escala.train(DiesOnRankOne(), **quick)

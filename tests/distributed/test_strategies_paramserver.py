"""Asynchronous SGD against sharded parameter servers: workers and servers are CPU processes on gloo."""

import pytest
import torch
from dying import DiesOnRankOne

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
    """Worker 1 sleeps 300 ms per step, so worker 0 (a few ms per step even on a loaded machine) runs
    ahead. Every assertion is on the servers' logged versions and clocks, none on wall time:

    * bound s=1: no worker was ever released more than 1 push ahead of the slowest (clock gap), every
      update's staleness is within (W-1)(2s+1) = 3 versions, and the fast worker was held at least once;
    * no bound: no push is ever held, every push is still applied, and the fast worker got more than one
      push ahead (the ordering the bound forbids)."""
    quick.update(epochs=1, max_steps=12, workers=2, batch_size=16, strategy="paramserver", timeout_s=300)
    quick.update(straggler_delay=0.3, straggler_ranks=(1,))
    ssp = escala.train(**dict(quick, staleness_bound=1, out=str(tmp_path / "ssp")))
    assert ssp["clock_gap_max"] <= 1 and ssp["staleness_max"] <= 3, ssp
    assert ssp["updates_per_server"] == 2 * ssp["steps"]
    assert ssp["held_pushes"] > 0  # the bound really made the fast worker wait
    free = escala.train(**dict(quick, out=str(tmp_path / "free")))
    assert free["held_pushes"] == 0 and free["updates_per_server"] == 2 * free["steps"]
    assert free["clock_gap_max"] > 1 and free["staleness_max"] > 1, free


def test_resume_restores_the_servers(quick, resume_matches_whole_run):
    """One worker is deterministic, so stop-and-resume equals one whole run only if the servers' shards
    and momentum came back from the checkpoint (and the worker's half-accumulated push: 31 is odd)."""
    quick.update(epochs=2, strategy="paramserver", servers=2, push_every=2, staleness_lr=True)
    resume_matches_whole_run(quick, stop_at=31)


def test_resume_with_topk_momentum_correction_keeps_the_velocity(quick, resume_matches_whole_run):
    """One worker against one server with top-k 5%, momentum correction and sparsity warm-up: the
    resumed run ends bit-identical only if the worker's velocity, residual and warm-up step count and
    the servers' state all came back."""
    quick.update(epochs=2, strategy="paramserver", momentum=0.9, compress="topk", topk_ratio=0.05)
    quick.update(topk_warmup_steps=40)
    summary, _ = resume_matches_whole_run(quick, stop_at=25)
    assert summary["compress"] == "topk" and summary["compression_ratio"] > 3  # 25% at first


def test_killed_worker_is_reported_by_rank_without_a_hang(quick):
    quick.pop("model")
    quick.update(workers=2, servers=1, batch_size=16, strategy="paramserver", timeout_s=60)
    with pytest.raises(WorkerFailed, match=r"worker rank 1 was killed by SIGKILL"):
        escala.train(DiesOnRankOne(), **quick)

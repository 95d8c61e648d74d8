"""Synchronous SGD with backup workers on 2-3 CPU ranks."""

import pytest
import torch

import escala
from escala.checkpoint import load_checkpoint
from escala.errors import UserError
from escala.metrics import read_jsonl

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(180)]


def _params(out):
    return load_checkpoint(f"{out}/checkpoints/last.pt")["model"]


def test_no_backups_equals_synchronous_sgd(quick, tmp_path):
    """b=0: 2 workers with batch 16 end where 1 worker with batch 32 does after 60 momentum-SGD steps,
    across an epoch boundary and mid-epoch checkpoints (where the chief drains). Tolerance 1e-5."""
    quick.update(hidden=(64, 32), epochs=3, max_steps=60, momentum=0.9)
    escala.train(**dict(quick, workers=1, batch_size=32, out=str(tmp_path / "ref")))
    run = tmp_path / "b0"
    two = escala.train(
        **dict(quick, workers=2, batch_size=16, strategy="backup", checkpoint_every_steps=7, out=str(run))
    )
    assert two["strategy"] == "backup" and two["steps"] == 60 and two["dropped_by_rank"] == [0, 0]
    a, b = _params(tmp_path / "ref"), _params(run)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-5, msg=name)
    log = read_jsonl(run / "backup.jsonl")
    assert [r["step"] for r in log] == list(range(1, 61))
    assert all(r["used"] == [0, 1] and r["dropped"] == [] for r in log)


def test_one_backup_drops_the_straggler(quick, tmp_path):
    """3 workers, 1 backup, rank 2 sleeps 100 ms per step: each step uses exactly 2 gradients, the
    chief's always among them, and the straggler is the one dropped most often (an ordering from the
    log, not a wall-time figure); training still reaches a useful accuracy."""
    quick.update(epochs=2, workers=3, batch_size=16, lr=0.05, strategy="backup", backups=1, timeout_s=300)
    quick.update(straggler_delay=0.1, straggler_ranks=(2,))
    summary = escala.train(**quick)
    log = read_jsonl(tmp_path / "run" / "backup.jsonl")
    assert len(log) == summary["steps"]
    assert all(len(r["used"]) == 2 and len(r["dropped"]) == 1 and 0 in r["used"] for r in log)
    dropped = summary["dropped_by_rank"]
    assert dropped[0] == 0 and dropped[1] + dropped[2] == summary["steps"]
    assert dropped[2] > dropped[1]
    assert summary["dropped_per_step"] == pytest.approx(1.0)
    assert summary["val_acc"] >= 0.8


def test_resume_with_compression_matches_an_uninterrupted_run(quick, resume_matches_whole_run):
    """b=0 is deterministic, so a run stopped at step 25 and resumed ends exactly where a whole run does,
    provided the top-k error-feedback residuals were checkpointed."""
    quick.update(epochs=2, workers=2, batch_size=16, strategy="backup", compress="topk", topk_ratio=0.1)
    whole, parts = resume_matches_whole_run(quick, stop_at=25)
    assert whole["compression_ratio"] > 4
    assert len(read_jsonl(parts / "backup.jsonl")) == whole["steps"]


def test_backups_must_leave_a_worker(quick):
    with pytest.raises(UserError, match="backups"):
        escala.train(**dict(quick, strategy="backup", workers=2, backups=2))

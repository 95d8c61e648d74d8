"""run_training(on_epoch=...) with 2 spawned workers: each epoch reported to the launching process,
a stop there ends every worker at that epoch, and a search trial of 2 workers never pauses."""

import json

import pytest
import torch
from dying import DiesOnRankOne

from escala.checkpoint import load_checkpoint
from escala.config import build_config
from escala.data.shard import ShardedBatches
from escala.runtime import WorkerFailed
from escala.search.executors.base import Reporter, TrialSpec, run_trial
from escala.search.stopping import ASHA, MedianStopping
from escala.search.trainable import train_trial
from escala.train import launch
from escala.train.launch import run_training

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(180)]


def final_params(out):
    return load_checkpoint(f"{out}/checkpoints/last.pt")["model"]


def _records(out):
    return [json.loads(line) for line in open(f"{out}/metrics.jsonl")]


def test_two_workers_report_every_epoch_and_end_as_a_run_without_the_hook(quick, tmp_path):
    quick.update(workers=2, batch_size=16, epochs=3)
    seen = []
    hooked = run_training(build_config(overrides=dict(quick, out=str(tmp_path / "hook"))), on_epoch=seen.append)
    plain = run_training(build_config(overrides=dict(quick, out=str(tmp_path / "plain"))))
    assert [r["epoch"] for r in seen] == [1, 2, 3]
    assert seen == _records(tmp_path / "hook")  # the records the workers wrote, received in order
    a, b = final_params(tmp_path / "hook"), final_params(tmp_path / "plain")
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert hooked["val_acc"] == plain["val_acc"] and hooked["steps"] == plain["steps"]
    assert [r["val_acc"] for r in seen] == [r["val_acc"] for r in _records(tmp_path / "plain")]


def test_an_exception_in_the_hook_ends_every_worker_at_that_epoch_and_is_raised_here(quick, tmp_path):
    quick.update(workers=2, batch_size=16, epochs=4)

    def hook(record):
        if record["epoch"] == 2:
            raise KeyError("enough")

    with pytest.raises(KeyError, match="enough"):
        run_training(build_config(overrides=quick), on_epoch=hook)
    assert [r["epoch"] for r in _records(quick["out"])] == [1, 2]


def _rule(name):
    """A real rule that has seen 3 other trials score 2.0 (above any accuracy) up to epoch 5: it stops
    the trial under test at epoch 2 (the median rule after its grace epochs; ASHA at its rung 2)."""
    rule = MedianStopping(grace_steps=2) if name == "median" else ASHA(min_steps=2, eta=4, max_steps=5)
    for other in (1, 2, 3):
        for step in range(1, 6):
            rule.on_report(other, step, 2.0)
    return rule


@pytest.mark.parametrize("name", ["median", "asha"])
def test_a_two_worker_trial_is_stopped_at_its_epoch_without_pausing(tmp_path, monkeypatch, name):
    starts = []
    spawn = launch.spawn_workers
    monkeypatch.setattr(launch, "spawn_workers", lambda *a, **k: starts.append(1) or spawn(*a, **k))
    rule, asked = _rule(name), []

    def ask(step, metrics):
        asked.append(step)
        return rule.on_report(0, step, metrics["val_acc"])

    config = {"workers": 2, "epochs": 5, "hidden": [16], "lr": 0.05, "batch_size": 32, "dataset": "digits"}
    spec = TrialSpec(0, train_trial, config, "val_acc", str(tmp_path / "t"), may_stop=True)
    event = run_trial(spec, Reporter(0, spec.trial_dir, {"cpus": 1}, ask, True, rule.decision_steps()))
    assert event.kind == "stopped" and event.step == 2.0 and asked == [1.0, 2.0]
    assert [r["epoch"] for r in _records(spec.trial_dir)] == [1, 2]  # nothing trained after the stop
    # one start, no segment: no checkpoint was written to resume from, no summary of a finished run
    assert starts == [1]
    assert not (tmp_path / "t" / "checkpoints" / "last.pt").exists()
    assert not (tmp_path / "t" / "summary.json").exists()


def test_a_worker_dying_after_a_report_still_ends_the_job_naming_its_rank(quick):
    quick.update(workers=2, batch_size=16, epochs=3, timeout_s=60)
    quick.pop("model")
    steps = ShardedBatches(1437, 16, 0, 2, 0).steps_per_epoch  # digits: 1437 training samples
    seen = []
    with pytest.raises(WorkerFailed, match=r"worker rank 1 was killed by SIGKILL"):
        run_training(build_config(overrides=quick), DiesOnRankOne(at=steps + 4), on_epoch=seen.append)
    assert [r["epoch"] for r in seen] == [1]

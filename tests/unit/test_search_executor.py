"""The local executor's reusable trial runners, the time budget, and pausing only where a rule decides
(the segments of a trial under torchrun)."""

from __future__ import annotations

import importlib
import os
import signal

import pytest

from escala.search import launch
from escala.search.executors.base import Reporter
from escala.search.executors.local import LocalExecutor
from escala.search.store import read_study
from escala.search.trainable import pause_epochs, train_trial


def pid_objective(config, reporter):
    if config["i"] == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # takes its runner down
    return {"metric": config["i"], "pid": os.getpid()}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("reuse", [True, False])
def test_runners_are_reused_and_a_dead_one_is_replaced(tmp_path, reuse):
    executor = LocalExecutor(parallel=1, cpus_per_trial=1, reuse=reuse)
    summary = launch(pid_objective, {"i": [0, 1, 2, 3, 4]}, out=tmp_path / "s", executor=executor)
    assert summary["trials_completed"] == 4 and summary["trials_failed"] == 1
    _, trials = read_study(tmp_path / "s")
    pids = [trials[i].result["pid"] for i in (0, 1, 3, 4)]
    assert "killed by SIGKILL" in trials[2].error
    if reuse:  # one runner before the crash, a fresh one after it
        assert pids[0] == pids[1] and pids[2] == pids[3] and pids[1] != pids[2]
    else:
        assert len(set(pids)) == 4


def slow_objective(config, reporter):
    import time

    time.sleep(0.3)
    return config["i"]


@pytest.mark.timeout(60)
def test_a_time_budget_stops_proposing_and_lets_running_trials_finish(tmp_path):
    summary = launch(
        slow_objective, {"i": list(range(100))}, out=tmp_path / "s", parallel=2, time_budget_s=1.0
    )
    assert 2 <= summary["trials_proposed"] < 100
    assert summary["trials_completed"] == summary["trials_proposed"]  # nothing cut off mid-run
    with pytest.raises(Exception, match="time budget must be > 0"):
        launch(slow_objective, {"i": [0]}, out=tmp_path / "t", time_budget_s=0)


def rung_objective(config, reporter):
    return {"metric": 1.0, "stop_steps": " ".join(f"{s:g}" for s in reporter.stop_steps or ())}


def test_asha_tells_trials_its_rungs():
    assert pause_epochs(6, None) == [1, 2, 3, 4, 5, 6]
    assert pause_epochs(6, (1.0, 4.0)) == [1, 4, 6]
    assert pause_epochs(5, (1.5, 4.5, 18.0)) == [2, 5]


@pytest.mark.timeout(60)
def test_a_study_under_asha_hands_the_rungs_to_its_trials(tmp_path):
    launch(
        rung_objective,
        {"i": [0, 1]},
        out=tmp_path / "s",
        early_stop="asha",
        early_stop_options={"max_steps": 20, "eta": 4},
    )
    _, trials = read_study(tmp_path / "s")
    assert all(t.result["stop_steps"] == "1 4 16" for t in trials.values())


@pytest.mark.timeout(60)
def test_a_trial_paused_only_at_rungs_reports_every_epoch_and_equals_an_uninterrupted_run(tmp_path):
    config = {"epochs": 3, "hidden": [16], "lr": 0.05, "batch_size": 64}
    asked = []

    def ask(step, metrics):
        asked.append((step, metrics["val_acc"]))
        return False

    paused = train_trial(config, Reporter(0, str(tmp_path / "a"), {"cpus": 1}, ask, True, (1.0,)))
    assert [s for s, _ in asked] == [1.0, 2.0, 3.0]
    plain = []
    whole = train_trial(
        config, Reporter(1, str(tmp_path / "b"), {"cpus": 1}, lambda s, m: plain.append(m["val_acc"]))
    )
    assert paused["val_acc"] == whole["val_acc"] and [a for _, a in asked] == plain
    assert paused["val_loss"] == pytest.approx(whole["val_loss"], abs=1e-6)


@pytest.mark.timeout(60)
def test_the_segments_kept_for_torchrun_report_every_epoch_and_equal_an_uninterrupted_run(tmp_path, monkeypatch):
    # under torchrun no process of the trial launched the others, so it cannot use the epoch hook;
    # pretend so for train_trial only (the run itself still trains here, in segments ending at 1 and 3)
    import escala.runtime

    config = {"epochs": 3, "hidden": [16], "lr": 0.05, "batch_size": 64}
    whole = train_trial(config, Reporter(1, str(tmp_path / "b"), {"cpus": 1}, lambda s, m: None))
    launch_module = importlib.import_module("escala.train.launch")  # escala.train is also a function

    monkeypatch.setattr(escala.runtime, "under_torchrun", lambda: True)
    runs, run_training = [], launch_module.run_training
    monkeypatch.setattr(
        launch_module, "run_training", lambda cfg, **kw: runs.append(cfg.max_steps) or run_training(cfg, **kw)
    )
    asked = []
    reporter = Reporter(0, str(tmp_path / "a"), {"cpus": 1}, lambda s, m: asked.append(s) or False, True, (1.0,))
    paused = train_trial(config, reporter)
    assert asked == [1.0, 2.0, 3.0] and len(runs) == 2  # segments: to epoch 1, then resumed to 3
    assert paused["val_acc"] == whole["val_acc"]
    assert paused["val_loss"] == pytest.approx(whole["val_loss"], abs=1e-6)


@pytest.mark.timeout(60)
def test_a_stop_ends_the_run_at_the_epoch_it_was_decided(tmp_path):
    from escala.search.executors.base import TrialSpec, run_trial

    config = {"epochs": 5, "hidden": [16], "lr": 0.05, "batch_size": 64}
    asked = []

    def ask(step, metrics):
        asked.append(step)
        return step == 2.0

    spec = TrialSpec(0, train_trial, config, "val_acc", str(tmp_path / "a"), may_stop=True)
    event = run_trial(spec, Reporter(0, spec.trial_dir, {"cpus": 1}, ask, True, None))
    assert event.kind == "stopped" and event.step == 2.0 and asked == [1.0, 2.0]
    lines = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # nothing trained after the stop


def threads_objective(config, reporter):
    from escala.runtime.dist import set_threads

    set_threads(0, 1)  # what escala.train does in a trial: 0 = "the cores this process may use"
    import torch

    return {"metric": 1.0, "threads": torch.get_num_threads()}


@pytest.mark.timeout(60)
def test_a_run_inside_a_trial_keeps_to_the_trials_cpus(tmp_path):
    # escala.train inside a trial used to take every core of the machine whatever the trial's share:
    # two parallel trials then oversubscribed the cores (a 6-trial grid took 18 s instead of 6)
    executor = LocalExecutor(parallel=2, cpus_per_trial=1)
    launch(threads_objective, {"i": [0, 1, 2]}, out=tmp_path / "s", executor=executor)
    _, trials = read_study(tmp_path / "s")
    assert [t.result["threads"] for t in trials.values()] == [1, 1, 1]

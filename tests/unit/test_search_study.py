"""The study driver on the local executor: crashes recorded, early stopping, resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from escala.errors import UserError
from escala.search import evolutionary_search, launch, uniform
from escala.search.executors.local import LocalExecutor
from escala.search.store import read_study


def grid_objective(config, reporter):
    if config["mode"] == "raise":
        raise ValueError("bad hyperparameters")
    if config["mode"] == "die":
        os.kill(os.getpid(), signal.SIGKILL)  # not even an exception: the process vanishes
    for step in (1, 2):
        reporter.report(step, score=config["lr"] * step)
    return {"score": config["lr"] * 10, "extra": "kept"}


def events(out):
    return [json.loads(line) for line in (Path(out) / "trials.jsonl").read_text().splitlines()]


@pytest.mark.timeout(120)
def test_crashing_trials_are_recorded_and_the_search_goes_on(tmp_path):
    space = {"lr": [0.1, 0.2], "mode": ["ok", "raise", "die"]}
    summary = launch(grid_objective, space, metric="score", parallel=2, out=tmp_path / "s")
    assert summary["trials_completed"] == 2 and summary["trials_failed"] == 4
    assert summary["best_config"] == {"lr": 0.2, "mode": "ok"} and summary["best_value"] == pytest.approx(2.0)
    _, trials = read_study(tmp_path / "s")
    errors = {t.config["mode"]: t.error for t in trials.values() if t.status == "failed"}
    assert "ValueError: bad hyperparameters" in errors["raise"]
    assert "killed by SIGKILL" in errors["die"]
    ok = [t for t in trials.values() if t.status == "completed"]
    assert all([r["step"] for r in t.reports] == [1.0, 2.0] and t.result["extra"] == "kept" for t in ok)
    saved = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert saved["trials_failed"] == 4 and saved["metric"] == "score" and saved["direction"] == "max"


def curve_objective(config, reporter):
    for epoch in range(1, 10):
        reporter.report(epoch, acc=config["q"] * epoch / 9)
    return {"acc": config["q"]}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("rule", ["asha", "median"])
def test_early_stopping_in_a_study_stops_the_weak_trials(tmp_path, rule):
    # qualities arrive best-first, so every later trial is worse than what came before it
    space = {"q": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]}
    summary = launch(curve_objective, space, metric="acc", early_stop=rule, out=tmp_path / rule)
    _, trials = read_study(tmp_path / rule)
    stopped = {t.config["q"] for t in trials.values() if t.status == "stopped"}
    assert summary["best_value"] == 0.9 and 0.9 not in stopped
    assert summary["trials_stopped_early"] == len(stopped) >= 3
    assert {0.3, 0.4} <= stopped
    assert all(len(t.reports) < 9 for t in trials.values() if t.status == "stopped")


def threads_objective(config, reporter):
    import torch

    return {"threads": torch.get_num_threads(), "gpus": os.environ.get("CUDA_VISIBLE_DEVICES", "")}


@pytest.mark.timeout(60)
def test_per_trial_resources_reach_the_trial(tmp_path):
    executor = LocalExecutor(parallel=2, cpus_per_trial=1, gpus=[3, 5], gpus_per_trial=1)
    launch(threads_objective, {"i": [0, 1, 2]}, metric="threads", out=tmp_path / "r", executor=executor)
    _, trials = read_study(tmp_path / "r")
    assert all(t.result["threads"] == 1 for t in trials.values())
    assert {t.result["gpus"] for t in trials.values()} <= {"3", "5"}
    with pytest.raises(UserError, match="need 4 GPU ids"):
        LocalExecutor(parallel=2, gpus=[0], gpus_per_trial=2)


def sphere(config, reporter):
    return -((config["x"] - 0.25) ** 2) - (config["y"] + 0.5) ** 2


@pytest.mark.timeout(120)
def test_evolutionary_search_one_liner_runs_de(tmp_path):
    space = {"x": uniform(-1, 1), "y": uniform(-1, 1)}
    summary = evolutionary_search(
        sphere,
        space,
        direction="max",
        popsize=6,
        generations=3,
        crossover=0.7,
        mutation=0.5,
        out=tmp_path / "de",
        parallel=2,
    )
    assert summary["trials_completed"] == 6 * 4 and summary["searcher"] == "de"
    _, trials = read_study(tmp_path / "de")
    assert all(-1 <= t.config["x"] <= 1 and -1 <= t.config["y"] <= 1 for t in trials.values())
    assert summary["best_value"] > -0.2


def test_a_study_directory_is_never_clobbered_and_resume_checks_settings(tmp_path):
    out = tmp_path / "s"
    launch(sphere, {"x": [0.0], "y": [0.0]}, out=out)
    with pytest.raises(UserError, match="already holds a study"):
        launch(sphere, {"x": [0.0], "y": [0.0]}, out=out)
    with pytest.raises(UserError, match="setting 'searcher'"):
        launch(sphere, {"x": [0.0], "y": [0.0]}, searcher="random", out=out, resume=True)
    with pytest.raises(UserError, match="holds no study"):
        launch(sphere, {"x": [0.0]}, out=tmp_path / "empty", resume=True)
    # resuming a finished study runs nothing again
    again = launch(sphere, {"x": [0.0], "y": [0.0]}, out=out, resume=True)
    assert again["trials_completed"] == 1 and Counter(e["event"] for e in events(out))["started"] == 1


DRIVER = """
import sys, time
from escala.search import launch, uniform, integer

def train(config, reporter):
    for step in (1, 2, 3):
        time.sleep(0.15)
        reporter.report(step, metric=-abs(config["x"] - 0.3) * step)
    return -abs(config["x"] - 0.3) - config["n"] / 100

if __name__ == "__main__":
    summary = launch(train, {"x": uniform(-1, 1), "n": integer(0, 5)}, searcher="ga", popsize=4,
                     trials=12, parallel=2, out=sys.argv[1], resume=len(sys.argv) > 2, seed=3)
    print("completed", summary["trials_completed"])
"""


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_killed_search_resumes_to_exactly_the_planned_trials(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(DRIVER))
    out = tmp_path / "study"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.time() + 120
    while time.time() < deadline:  # kill it once some trials finished and others are mid-flight
        log = events(out) if (out / "trials.jsonl").exists() else []
        done = sum(e["event"] == "completed" for e in log)
        if done >= 5 and any(e["event"] == "report" for e in log[-3:]):
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=30)
    before = events(out)
    finished_before = {e["trial"] for e in before if e["event"] == "completed"}
    assert 5 <= len(finished_before) < 12

    result = subprocess.run(
        [sys.executable, str(script), str(out), "--resume"], capture_output=True, text=True, timeout=150
    )
    assert result.returncode == 0, result.stderr
    after = events(out)
    proposed = [e["trial"] for e in after if e["event"] == "proposed"]
    assert sorted(proposed) == list(range(12))  # every id once: no duplicate proposals
    terminal = Counter(e["trial"] for e in after if e["event"] in ("completed", "failed", "stopped"))
    assert set(terminal) == set(range(12)) and all(n == 1 for n in terminal.values())
    started = Counter(e["trial"] for e in after if e["event"] == "started")
    assert all(started[t] == 1 for t in finished_before)  # nothing finished ran again
    assert "completed 12" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials_completed"] == 12 and summary["trials_failed"] == 0

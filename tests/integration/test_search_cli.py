"""``escala search`` over escala train's fields, ``escala search show``, summary.json, errors."""

from __future__ import annotations

import json

import pytest

from escala.cli.main import main

SPACE = """
epochs = 2
hidden = [[16], [32]]
lr = [0.01, 0.2]
dataset = ["digits", "mnist"]
data_dir = "/nonexistent-escala-dir"
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_grid_search_over_train_fields_then_show(tmp_path, capsys):
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    out = tmp_path / "study"
    code = main(["search", "--space", str(space), "--searcher", "grid", "--parallel", "2", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "best_config",
        "best_value",
        "metric",
        "direction",
        "trials_completed",
        "trials_failed",
        "trials_stopped_early",
        "wall_s",
    ):
        assert key in summary
    # the mnist half of the grid fails in its trial (no such directory) and is recorded; the rest go on
    assert summary["trials_completed"] == 4 and summary["trials_failed"] == 4
    assert summary["metric"] == "val_acc" and summary["direction"] == "max"
    assert summary["best_config"]["dataset"] == "digits" and summary["best_value"] > 0.8
    assert (out / "best.png").stat().st_size > 1000
    trial_run = out / "trials" / f"{summary['best_trial']:05d}"
    assert json.loads((trial_run / "summary.json").read_text())["val_acc"] == summary["best_value"]
    capsys.readouterr()
    assert main(["search", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "completed" in shown and "failed" in shown and "nonexistent-escala-dir" in shown
    # resuming a finished study re-runs nothing
    assert main(["search", "--space", str(space), "--searcher", "grid", "--out", str(out), "--resume"]) == 0
    events = [json.loads(x) for x in (out / "trials.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "started" for e in events) == 8


@pytest.mark.timeout(120)
def test_early_stopping_from_the_command_line(tmp_path):
    space = tmp_path / "space.toml"
    space.write_text("epochs = 3\nhidden = [[16]]\nlr = [0.3, 0.1, 0.001, 0.0003, 0.0001]\n")
    out = tmp_path / "asha"
    assert (
        main(
            ["search", "--space", str(space), "--searcher", "grid", "--early-stop", "asha", "--out", str(out)]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials_stopped_early"] >= 2  # the tiny learning rates fall behind at epoch 1
    assert summary["trials_completed"] + summary["trials_stopped_early"] == 5
    assert summary["best_config"]["lr"] in (0.3, 0.1)
    # TensorBoard HParams: one run per completed trial (read back in tests/unit/test_search_report.py)
    pytest.importorskip("tensorboard")
    runs = [p for p in (out / "tb").iterdir() if p.is_dir()]
    assert len(runs) == summary["trials_completed"] and all(any(r.iterdir()) for r in runs)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_trials_that_are_data_parallel_runs_themselves(tmp_path):
    # each trial is an escala train run with 2 data-parallel workers; under ASHA rank 0 reports each
    # epoch to the trial's process (no pause, no resume), and the stopped trial is recorded as such
    space = tmp_path / "space.toml"
    space.write_text("epochs = 3\nworkers = 2\nhidden = [[16]]\nlr = [0.3, 0.0003]\n")
    out = tmp_path / "dp"
    args = ["search", "--space", str(space), "--searcher", "grid", "--early-stop", "asha", "--eta", "2"]
    assert main([*args, "--cpus-per-trial", "2", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials_completed"] == 1 and summary["trials_stopped_early"] == 1
    run = json.loads((out / "trials" / f"{summary['best_trial']:05d}" / "summary.json").read_text())
    assert run["workers"] == 2 and run["epochs"] == 3 and run["val_acc"] == summary["best_value"]
    epochs = [json.loads(x)["epoch"] for x in (out / "trials/00000/metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]  # one record per epoch, in one run


@pytest.mark.parametrize(
    "space, args, words",
    [
        ("lrr = [0.1]", [], "unknown key 'lrr' (did you mean 'lr'?)"),
        ("batch_size = {uniform = [8, 64]}", [], "field 'batch_size' must be an integer"),
        ("lr = {loguniform = [0.001, 0.1]}", ["--searcher", "grid"], "grid searcher needs lists only"),
        ("out = 'x'", [], "'out' is set by escala search"),
        ("lr = [0.1]", ["--searcher", "random", "--popsize", "4"], "do not apply"),
        ("lr = [0.1]", ["--eta", "3"], "--eta applies to --early-stop asha only"),
        ("lr = [0.1]", ["--min-epochs", "2"], "--min-epochs applies to"),
        ("lr = [0.1]", ["--early-stop", "asha", "--eta", "1"], "need eta > 1"),
        ("lr = [0.1]", ["--time-budget", "0"], "--time-budget must be > 0"),
        ("lr = [0.1]", ["--address", "127.0.0.1:6379"], "--address applies to --executor ray only"),
        ("lr = [0.1]", ["--executor", "ray", "--gpus", "0"], "--gpus applies to --executor local"),
    ],
)
def test_bad_input_is_one_line_and_status_2(tmp_path, capsys, space, args, words):
    f = tmp_path / "space.toml"
    f.write_text(space)
    with pytest.raises(SystemExit) as exit_:
        main(["search", "--space", str(f), "--out", str(tmp_path / "o"), *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def test_show_of_a_directory_without_a_study(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["search", "show", str(tmp_path)])
    assert exit_.value.code == 2 and "holds no study" in capsys.readouterr().err

"""``escala ensemble``: members trained in parallel, the ensemble evaluated against them; bad input."""

from __future__ import annotations

import json

import pytest
import torch

from escala.cli.main import main
from escala.data import load_digits
from escala.search import ensemble

CONFIG = "epochs = 2\nhidden = [16]\nlr = 0.1\nbatch_size = 64\n"


@pytest.mark.timeout(120)
def test_ensemble_of_seeds_end_to_end(tmp_path, capsys):
    config = tmp_path / "member.toml"
    config.write_text(CONFIG)
    out = tmp_path / "ens"
    code = main(["ensemble", "--config", str(config), "--members", "3", "--parallel", "2", "--out", str(out)])
    assert code == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["members"] == 3 and s["inference"] == "intra" and s["combine"] == "mean"
    assert [c["seed"] for c in s["member_configs"]] == [0, 1, 2]
    assert s["best_member_acc"] == max(s["member_acc"]) and s["best_member_acc"] > 0.7
    assert s["mean_member_acc"] == pytest.approx(sum(s["member_acc"]) / 3)
    assert s["gain_over_best"] == pytest.approx(s["ensemble_acc"] - s["best_member_acc"])
    # the numbers are those of the members' own checkpoints on the seed-0 split they all trained on
    split = load_digits(seed=0)
    models = [ensemble.load_member(d, split.input_shape, split.num_classes) for d in s["member_dirs"]]
    probs = ensemble.member_probs(models, split.val.x)
    assert ensemble.evaluate(probs, split.val.y)["ensemble_acc"] == pytest.approx(s["ensemble_acc"])
    mean_pred = probs.mean(0).argmax(-1)
    assert s["accuracy"] == pytest.approx(float((mean_pred == split.val.y).float().mean()))
    assert not torch.equal(models[0].state_dict()["fc1.weight"], models[1].state_dict()["fc1.weight"])
    assert "best member" in capsys.readouterr().out


def _study(tmp_path, completed: int):
    """A finished search: ``completed`` trials over hidden sizes, with made-up values."""
    from escala.search.store import StudyStore

    store = StudyStore(tmp_path / "search", {"searcher": "grid", "direction": "max", "metric": "val_acc"})
    for i in range(completed):
        store.propose(i, {"epochs": 1, "hidden": [8 + 8 * i], "lr": 0.1})
        store.start(i)
        store.complete(i, {"val_acc": 0.5 + i / 10}, 0.5 + i / 10)
    store.close()
    return tmp_path / "search"


@pytest.mark.timeout(120)
def test_ensemble_of_a_searchs_top_k_runs_inter_graph_for_mixed_architectures(tmp_path):
    search = _study(tmp_path, 3)
    out = tmp_path / "ens"
    assert main(["ensemble", "--from-search", str(search), "--top", "2", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["members"] == 2 and s["inference"] == "inter"  # hidden 24 and 16: two architectures
    assert [c["hidden"] for c in s["member_configs"]] == [[24], [16]]  # the best two, best first


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--members", "1"], "at least 2 members"),
        (["--seeds", "3,3"], "at least 2 members"),
        (["--seeds", "1,x"], "--seeds must be integers"),
        (["--from-search", "/nonexistent-escala-search"], "no such directory"),
        (["--from-search", "SEARCH", "--top", "5"], "only 3 completed"),
        (["--from-search", "SEARCH", "--top", "1"], "--top must be >= 2"),
        (["--top", "2"], "--top needs --from-search"),
        (["--members", "2", "--seeds", "0,1"], "not both"),
        (["--config", "CONFIG", "--parallel", "0"], "--parallel must be >= 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    search = _study(tmp_path, 3)
    config = tmp_path / "c.toml"
    config.write_text(CONFIG)
    argv = [str(search) if a == "SEARCH" else str(config) if a == "CONFIG" else a for a in argv]
    with pytest.raises(SystemExit) as exit_:
        main(["ensemble", *argv, "--out", str(tmp_path / "e")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "e" / "members").exists()


def test_a_bad_field_in_the_member_config_is_refused(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text("epochs = 1\nlearning_rate = 0.1\n")
    with pytest.raises(SystemExit) as exit_:
        main(["ensemble", "--config", str(config), "--out", str(tmp_path / "e")])
    assert exit_.value.code == 2
    assert "learning_rate" in capsys.readouterr().err

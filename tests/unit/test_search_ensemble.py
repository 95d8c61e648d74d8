"""Ensembles: intra-graph (vmap) and inter-graph (one process per member) inference agree."""

from __future__ import annotations

import pytest
import torch

from escala.data import load_digits
from escala.errors import UserError
from escala.models import build_model
from escala.search import ensemble


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    out = tmp_path_factory.mktemp("ens") / "study"
    config = {"epochs": 2, "hidden": [32], "lr": 0.05, "batch_size": 32}
    return ensemble.train_members(config, out, seeds=[0, 1, 2], parallel=2)


@pytest.fixture(scope="module")
def val():
    split = load_digits(seed=0)
    return split.val.x, split.val.y, split.input_shape, split.num_classes


def test_intra_graph_equals_each_member_run_alone(members, val):
    x, y, shape, classes = val
    models = [ensemble.load_member(d, shape, classes) for d in members]
    assert not torch.equal(models[0].state_dict()["fc1.weight"], models[1].state_dict()["fc1.weight"])
    ref = ensemble.member_probs(models, x)
    fast = ensemble.intra_graph_probs(models, x)
    assert fast.shape == (3, len(y), classes)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.distributed
@pytest.mark.timeout(120)
def test_inter_graph_agrees_with_intra_graph(members, val):
    x, y, shape, classes = val
    models = [ensemble.load_member(d, shape, classes) for d in members]
    intra = ensemble.intra_graph_probs(models, x)
    inter = ensemble.inter_graph_probs(members, x, shape, classes)
    torch.testing.assert_close(inter, intra, rtol=1e-5, atol=1e-6)
    report = ensemble.evaluate(inter, y)
    assert report["members"] == 3 and report["best_member_acc"] > 0.8
    mean_pred = inter.mean(dim=0).argmax(dim=-1)
    assert report["ensemble_acc"] == pytest.approx(float((mean_pred == y).float().mean()))
    assert report["gain_over_best"] == pytest.approx(report["ensemble_acc"] - report["best_member_acc"])


def test_combine_mean_and_vote():
    p = torch.tensor(
        [
            [[0.6, 0.4], [0.9, 0.1]],
            [[0.4, 0.6], [0.45, 0.55]],
            [[0.45, 0.55], [0.45, 0.55]],
        ]
    )
    # sample 0: mean favours class 1 (0.517); two of three members vote class 1
    # sample 1: mean favours class 0 (0.6); the vote goes to class 1 (two votes)
    assert ensemble.combine(p, "mean").tolist() == [1, 0]
    assert ensemble.combine(p, "vote").tolist() == [1, 1]
    with pytest.raises(UserError, match="'mean' or 'vote'"):
        ensemble.combine(p, "max")


def test_intra_graph_refuses_mixed_architectures():
    a = build_model("mlp", (1, 8, 8), 10, hidden=(16,))
    b = build_model("mlp", (1, 8, 8), 10, hidden=(32,))
    with pytest.raises(UserError, match="one architecture"):
        ensemble.intra_graph_probs([a, b], torch.zeros(2, 1, 8, 8))

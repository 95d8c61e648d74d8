"""Pruning: masks from magnitudes, masks fixed through retraining in the real loop, structured thinning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from escala.compress.prune import apply_masks, magnitude_masks, make_permanent, round_sparsity, sparsity
from escala.compress.retrain import retrain, stage_config
from escala.compress.structured import layer_shapes, reshape_layers, thin
from escala.compress.targets import weight_layers
from escala.data import load_digits
from escala.errors import UserError
from escala.models import build_model


def _mlp(seed=0):
    torch.manual_seed(seed)
    return build_model("mlp", (1, 8, 8), 10, hidden=(32, 16))


def test_target_sparsity_removes_the_smallest_weights():
    model = _mlp()
    layers = weight_layers(model)
    masks = magnitude_masks(layers, sparsity={n: 0.75 for n in layers})
    for name, mask in masks.items():
        w = layers[name].weight.detach()
        assert int((mask == 0).sum()) == pytest.approx(0.75 * w.numel(), abs=1)
        kept, dropped = w[mask.bool()].abs(), w[~mask.bool()].abs()
        assert kept.min() >= dropped.max()


def test_quality_threshold_is_quality_times_std():
    model = _mlp()
    layers = weight_layers(model)
    masks = magnitude_masks(layers, quality={"fc1": 1.0})
    w = layers["fc1"].weight.detach()
    assert torch.equal(masks["fc1"].bool(), w.abs() > w.std())
    assert bool(masks["fc2"].all())  # not named: untouched


def test_rounds_only_remove_more_and_reach_the_target():
    model = _mlp()
    layers = weight_layers(model)
    previous = None
    for k in (1, 2, 3):
        s = round_sparsity(0.9, k, 3)
        apply_masks(model, magnitude_masks(layers, sparsity={"fc1": s}))
        mask = model.fc1.weight_mask.clone()
        if previous is not None:
            assert bool((mask <= previous).all())  # pruned stays pruned
        previous = mask
    assert float((previous == 0).float().mean()) == pytest.approx(0.9, abs=1e-3)


@pytest.mark.slow
def test_masks_stay_zero_through_retraining(tmp_path):
    data = load_digits()
    model = _mlp()
    layers = weight_layers(model)
    masks = magnitude_masks(layers, sparsity={n: 0.8 for n in layers})
    apply_masks(model, masks)
    base = {
        "dataset": "digits",
        "model": "mlp",
        "hidden": [32, 16],
        "lr": 0.1,
        "weight_decay": 1e-3,
        "progress": "none",
    }
    before = {n: m.weight_orig.detach().clone() for n, m in layers.items()}
    retrain(model, data, stage_config(base, tmp_path / "r", epochs=2))
    for name, module in layers.items():
        w = module.weight_orig * module.weight_mask
        assert bool((w[masks[name] == 0] == 0).all())
        # retraining really trained: the surviving weights moved
        assert not torch.equal(module.weight_orig[masks[name] == 1], before[name][masks[name] == 1])
    make_permanent(model)
    stats = sparsity(model)
    assert all(s["density"] == pytest.approx(0.2, abs=0.01) for s in stats.values())
    assert not any(hasattr(m, "weight_mask") for m in model.modules())


@pytest.mark.parametrize("layer", ["conv1", "conv2", "fc1"])  # conv->conv, conv->flatten->fc, fc->fc
def test_thinning_equals_zeroing_the_removed_units(layer):
    torch.manual_seed(0)
    model = build_model("lenet5", (1, 8, 8), 10)
    reference = build_model("lenet5", (1, 8, 8), 10)
    reference.load_state_dict(model.state_dict())
    widths = thin(model, {layer: 0.5})
    units = getattr(reference, layer).weight.shape[0]
    assert widths == {layer: units - int(0.5 * units)}
    # A removed unit outputs relu(0 + 0) = 0, so zeroing its row and bias in the reference changes nothing
    # the next layer sees: the thinned model must compute the same function.
    with torch.no_grad():
        ref_layer = getattr(reference, layer)
        norms = ref_layer.weight.flatten(1).norm(dim=1)
        drop = torch.argsort(norms)[: int(0.5 * units)]
        ref_layer.weight[drop] = 0
        ref_layer.bias[drop] = 0
    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)
    assert model.fc3.out_features == 10
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in reference.parameters())


def test_reshape_layers_rebuilds_thinned_shapes():
    model = _mlp()
    thin(model, 0.25)
    fresh = _mlp(1)
    reshape_layers(fresh, layer_shapes(model))
    fresh.load_state_dict(model.state_dict())  # would fail on any shape mismatch


def test_structured_refuses_the_classifier_and_resnets():
    with pytest.raises(UserError, match="classifier"):
        thin(_mlp(), {"fc3": 0.5})
    with pytest.raises(UserError, match="flat chain"):
        thin(build_model("resnet20", (3, 8, 8), 10), 0.5)


def test_apply_masks_to_plain_linear():
    layer = nn.Sequential()
    layer.add_module("fc", nn.Linear(4, 3))
    apply_masks(layer, {"fc": torch.zeros(3, 4)})
    assert bool((layer(torch.randn(2, 4)) == layer.fc.bias).all())

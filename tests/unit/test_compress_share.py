"""Weight sharing: k-means codebooks with at most 2^b values, grouped-gradient centroid fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from escala.compress.prune import apply_masks, magnitude_masks, make_permanent
from escala.compress.retrain import retrain, stage_config
from escala.compress.share import SharedWeight, apply_sharing, codebooks, kmeans_codebook, remove_sharing
from escala.compress.targets import weight_layers
from escala.data import load_digits
from escala.errors import UserError
from escala.models import build_model


def _mlp():
    torch.manual_seed(0)
    return build_model("mlp", (1, 8, 8), 10, hidden=(32, 16))


@pytest.mark.parametrize("bits", [1, 2, 3, 5])
def test_codebook_has_at_most_2_to_the_b_values(bits):
    model = _mlp()
    apply_sharing(model, {n: bits for n in weight_layers(model)})
    for name, (_codes, table) in codebooks(model).items():
        assert table.numel() <= 2**bits
        values = torch.unique(getattr(model, name).weight.detach())
        assert values.numel() <= 2**bits


def test_linear_init_spans_min_to_max_and_clusters_are_means():
    values = np.random.default_rng(0).normal(size=2000)
    centroids, labels = kmeans_codebook(values, 8)
    assert centroids.size == 8 and labels.max() == 7
    for k in range(8):  # k-means fixed point: each centroid is the mean of its group
        assert centroids[k] == pytest.approx(values[labels == k].mean(), abs=1e-3)
    few, few_labels = kmeans_codebook(np.array([0.5, -1.0, 0.5]), 8)
    assert few.tolist() == [-1.0, 0.5] and few_labels.tolist() == [1, 0, 1]


def test_centroid_gradient_is_the_sum_of_its_group():
    model = _mlp()
    apply_sharing(model, {"fc1": 3})
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    # Reference: the gradient of the dense weight, summed per code (Deep Compression eq. 3).
    dense = build_model("mlp", (1, 8, 8), 10, hidden=(32, 16))
    dense.load_state_dict({**model.state_dict(), "fc1.weight": model.fc1.weight.detach()}, strict=False)
    torch.nn.functional.cross_entropy(dense(x), y).backward()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    codes = model.fc1.weight_codes
    expected = torch.zeros(8).index_add_(0, codes.flatten(), dense.fc1.weight.grad.flatten())[1:]
    got = model.fc1.weight_centroids.grad
    torch.testing.assert_close(got, expected[: got.numel()], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_fine_tuning_moves_centroids_and_keeps_zeros(tmp_path):
    data = load_digits()
    model = _mlp()
    layers = weight_layers(model)
    apply_masks(model, magnitude_masks(layers, sparsity={n: 0.7 for n in layers}))
    make_permanent(model)
    zeros = {n: (m.weight == 0).clone() for n, m in layers.items()}
    apply_sharing(model, {n: 4 for n in layers})
    before = {n: t.clone() for n, (_, t) in codebooks(model).items()}
    base = {"dataset": "digits", "model": "mlp", "hidden": [32, 16], "lr": 0.05, "progress": "none"}
    retrain(model, data, stage_config(base, tmp_path / "share", epochs=1))
    after = codebooks(model)
    assert any(not torch.equal(before[n], after[n][1]) for n in before)
    books = remove_sharing(model)
    for name, module in weight_layers(model).items():
        assert bool((module.weight[zeros[name]] == 0).all())
        codes, table = books[name]
        assert torch.equal(module.weight, table[codes])
        assert not hasattr(module, "weight_centroids") and not module._forward_pre_hooks
        assert isinstance(module.weight, torch.nn.Parameter)


def test_right_inverse_gives_group_means():
    codes = torch.tensor([[0, 1, 1], [2, 2, 0]])
    shared = SharedWeight(2)
    w = torch.tensor([[0.0, 1.0, 3.0], [5.0, 7.0, 0.0]])
    assert shared.right_inverse(w, codes).tolist() == [2.0, 6.0]


def test_shared_model_pickles_for_spawned_workers():
    """A shared layer must cross a process boundary (``--workers N``) and compute the same outputs."""
    import pickle

    from escala.compress.retrain import refresh

    model = _mlp()
    apply_sharing(model, {"fc1": 3})
    x = torch.randn(4, 1, 8, 8)
    model(x).sum().backward()  # leaves a non-leaf weight behind, as training does
    refresh(model)
    copy = pickle.loads(pickle.dumps(model))
    torch.testing.assert_close(copy(x), model(x))
    assert copy.fc1.weight_centroids.requires_grad


@pytest.mark.parametrize("bits", [0, 17, -1])
def test_bits_outside_1_to_16_are_refused(bits):
    with pytest.raises(UserError, match="between 1 and 16"):
        apply_sharing(_mlp(), {"fc1": bits})

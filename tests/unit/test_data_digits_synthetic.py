"""Digits and synthetic loaders, the registry, TensorData and as_split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch.utils.data import Dataset

from escala.data import DATASETS, DataSplit, TensorData, as_split, load_dataset
from escala.data.digits import load_digits
from escala.data.synthetic import load_synthetic
from escala.errors import UserError

# ---------------------------------------------------------------- digits


def test_digits_shapes_dtypes_and_range():
    split = load_digits()
    assert isinstance(split, DataSplit)
    assert split.name == "digits"
    assert split.input_shape == (1, 8, 8)
    assert split.num_classes == 10
    assert len(split.train) + len(split.val) == 1797
    assert len(split.val) == 360  # ceil(0.2 * 1797)
    for data in (split.train, split.val):
        assert isinstance(data, TensorData)
        assert data.x.dtype == torch.float32 and data.y.dtype == torch.int64
        assert data.x.shape[1:] == (1, 8, 8)
        assert float(data.x.min()) == 0.0 and float(data.x.max()) == 1.0
        assert set(data.y.tolist()) == set(range(10))
    x, y = split.train[0]
    assert x.shape == (1, 8, 8) and y.dim() == 0


def test_digits_split_is_stratified():
    split = load_digits()
    train_frac = torch.bincount(split.train.y, minlength=10).double() / len(split.train)
    val_frac = torch.bincount(split.val.y, minlength=10).double() / len(split.val)
    # Stratified: each class's share is within one sample's worth across the two sets.
    assert float((train_frac - val_frac).abs().max()) < 1.5 / len(split.val)


def test_digits_split_is_fixed_and_seeded():
    a, b = load_digits(), load_digits()
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y)
    c = load_digits(seed=1)
    assert not torch.equal(a.val.x, c.val.x)
    # The two sets together are exactly the bundled data: nothing lost, nothing duplicated.
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    ours = sorted(
        zip(
            torch.cat([a.train.x, a.val.x]).reshape(-1, 64).mul(16).round().int().tolist(),
            torch.cat([a.train.y, a.val.y]).tolist(),
        )
    )
    theirs = sorted(zip(bunch.data.astype(int).tolist(), bunch.target.tolist()))
    assert ours == theirs


def test_digits_rejects_bad_val_fraction():
    with pytest.raises(UserError, match="val_fraction"):
        load_digits(val_fraction=1.5)


# ---------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_independent_of_global_rng():
    torch.manual_seed(123)
    a = load_synthetic(samples=500, shape=(3, 4), classes=5, seed=7)
    torch.manual_seed(999)
    torch.rand(10)
    b = load_synthetic(samples=500, shape=(3, 4), classes=5, seed=7)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.train.y, b.train.y)
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.val.y, b.val.y)
    c = load_synthetic(samples=500, shape=(3, 4), classes=5, seed=8)
    assert not torch.equal(a.train.x, c.train.x)


@pytest.mark.parametrize("shape", [(1, 8, 8), (20,), (2, 3, 5, 2)])
def test_synthetic_shapes_and_sizes(shape):
    split = load_synthetic(samples=101, shape=shape, classes=3, val_fraction=0.25)
    assert split.input_shape == shape
    assert split.num_classes == 3
    assert len(split.train) == 76 and len(split.val) == 25
    assert split.train.x.shape == (76, *shape) and split.train.x.dtype == torch.float32
    assert split.train.y.dtype == torch.int64
    assert int(split.train.y.min()) >= 0 and int(split.train.y.max()) < 3


def test_synthetic_smallest_split():
    split = load_synthetic(samples=2, shape=(1,), classes=2, val_fraction=0.01)
    assert len(split.train) == 1 and len(split.val) == 1


def test_synthetic_is_learnable_by_logistic_regression():
    split = load_synthetic(samples=3000, shape=(1, 8, 8), classes=10, seed=0)
    x_train = split.train.x.reshape(len(split.train), -1).numpy()
    x_val = split.val.x.reshape(len(split.val), -1).numpy()
    # All classes appear, so chance accuracy is ~0.1 at best for a majority guess.
    assert len(set(split.train.y.tolist())) == 10
    majority = np.bincount(split.val.y.numpy()).max() / len(split.val)
    model = LogisticRegression(max_iter=2000).fit(x_train, split.train.y.numpy())
    score = model.score(x_val, split.val.y.numpy())
    assert score > 0.75
    assert score > majority + 0.5


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"samples": 1}, "samples"),
        ({"samples": 10.5}, "samples"),
        ({"classes": 1}, "classes"),
        ({"shape": (1, 0, 8)}, "shape"),
        ({"shape": ()}, "shape"),
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"val_fraction": 1.0}, "val_fraction"),
    ],
)
def test_synthetic_rejects_bad_arguments(kwargs, argument):
    with pytest.raises(UserError, match=argument):
        load_synthetic(**kwargs)


# ---------------------------------------------------------------- registry


def test_registry_names_and_dispatch():
    assert DATASETS == ("digits", "mnist", "synthetic")
    assert load_dataset("digits").name == "digits"
    split = load_dataset("synthetic", synthetic_samples=64, synthetic_shape=(5,), synthetic_classes=4, seed=3)
    assert split.input_shape == (5,) and split.num_classes == 4
    assert len(split.train) + len(split.val) == 64
    assert torch.equal(split.train.x, load_synthetic(samples=64, shape=(5,), classes=4, seed=3).train.x)


def test_registry_unknown_name():
    with pytest.raises(
        UserError, match=r"dataset 'cifar' is unknown; choose one of digits, mnist, synthetic"
    ):
        load_dataset("cifar")


def test_registry_mnist_needs_data_dir():
    with pytest.raises(UserError, match="--data-dir is required for mnist"):
        load_dataset("mnist")


# ---------------------------------------------------------------- TensorData


def test_tensordata_validates():
    x, y = torch.zeros(4, 3), torch.zeros(4, dtype=torch.int64)
    data = TensorData(x, y)
    assert len(data) == 4 and data.input_shape == (3,)
    with pytest.raises(ValueError, match="float32"):
        TensorData(x.double(), y)
    with pytest.raises(ValueError, match="int64"):
        TensorData(x, y.int())
    with pytest.raises(ValueError, match="samples"):
        TensorData(x, y[:3])
    with pytest.raises(ValueError, match=r"\(N,\)"):
        TensorData(x, y.reshape(2, 2))
    with pytest.raises(ValueError, match="input_shape"):
        TensorData(torch.zeros(4), y)


# ---------------------------------------------------------------- as_split


class _PairsDataset(Dataset):
    """A plain user dataset: not TensorData, labels as python ints."""

    def __init__(self, n: int, labels: list[int]) -> None:
        self.items = [(torch.full((2, 3), float(i)), labels[i % len(labels)]) for i in range(n)]
        self.reads = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        self.reads += 1
        return self.items[index]


def test_as_split_on_plain_dataset_infers_shape_and_classes():
    train, val = _PairsDataset(6, [0, 1, 2]), _PairsDataset(3, [4])
    split = as_split(train, val)
    assert split.input_shape == (2, 3)
    assert split.num_classes == 5  # max label 4 lives only in val
    assert split.train is train and split.val is val
    assert split.name == "custom"


def test_as_split_with_explicit_classes_does_not_scan_labels():
    train, val = _PairsDataset(6, [0, 1]), _PairsDataset(3, [1])
    split = as_split(train, val, num_classes=7)
    assert split.num_classes == 7
    assert train.reads == 1 and val.reads == 1  # only the shape probes


def test_as_split_uses_tensordata_labels():
    train = TensorData(torch.zeros(5, 4), torch.tensor([0, 1, 2, 3, 8]))
    val = TensorData(torch.zeros(2, 4), torch.tensor([1, 2]))
    assert as_split(train, val).num_classes == 9
    with pytest.raises(UserError, match="label 8"):
        as_split(train, val, num_classes=5)


def test_as_split_rejects_bad_datasets():
    with pytest.raises(UserError, match="train dataset is empty"):
        as_split(_PairsDataset(0, [0]), _PairsDataset(2, [1]))
    with pytest.raises(UserError, match="val"):
        as_split(_PairsDataset(2, [1]), 42)
    bad_labels = _PairsDataset(3, [0])
    bad_labels.items[2] = (bad_labels.items[2][0], 0.5)
    with pytest.raises(UserError, match=r"train\[2\] label"):
        as_split(bad_labels, _PairsDataset(2, [1]))
    other_shape = TensorData(torch.zeros(2, 9), torch.tensor([0, 1]))
    with pytest.raises(UserError, match="shape"):
        as_split(_PairsDataset(2, [1]), other_shape)

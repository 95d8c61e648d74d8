"""Data sets for escala: built-in loaders, a name registry and a wrapper for user data sets.

Every loader returns a :class:`DataSplit` (train set, validation set, input shape, class count), so
the rest of escala never cares where the data came from. Built-in data sets are :class:`TensorData`
held in memory; :func:`as_split` accepts any map-style ``torch.utils.data.Dataset``.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from escala.data.digits import load_digits
from escala.data.idx import load_mnist, read_idx, write_idx
from escala.data.split import DataSplit
from escala.data.synthetic import load_synthetic
from escala.data.tensors import TensorData
from escala.errors import UserError

DATASETS = ("digits", "mnist", "synthetic")

__all__ = [
    "DATASETS",
    "DataSplit",
    "TensorData",
    "as_split",
    "load_dataset",
    "load_digits",
    "load_mnist",
    "load_synthetic",
    "read_idx",
    "write_idx",
]


def load_dataset(
    name: str,
    data_dir: str | None = None,
    *,
    seed: int = 0,
    synthetic_samples: int = 4096,
    synthetic_shape: tuple[int, ...] = (1, 8, 8),
    synthetic_classes: int = 10,
) -> DataSplit:
    """Load a built-in data set by name (one of :data:`DATASETS`).

    ``data_dir`` is needed only for ``mnist``; ``seed`` fixes the digits split and the synthetic
    data; the ``synthetic_*`` arguments are used only by ``synthetic``.
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if key == "digits":
        return load_digits(seed=seed)
    if key == "mnist":
        if data_dir is None or str(data_dir) == "":
            raise UserError(
                "--data-dir is required for mnist: point it at the directory holding "
                "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"
            )
        return load_mnist(data_dir)
    if key == "synthetic":
        return load_synthetic(
            samples=synthetic_samples, shape=synthetic_shape, classes=synthetic_classes, seed=seed
        )
    raise UserError(f"dataset {name!r} is unknown; choose one of {', '.join(DATASETS)}")


def _label(value: Any, where: str) -> int:
    """One class label as an int; anything that is not a single integer is a user mistake."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise UserError(
                f"{where} label must be a single integer, got tensor {value.dtype} {tuple(value.shape)}"
            )
        value = value.item()
    elif isinstance(value, np.ndarray | np.generic):
        if value.size != 1 or value.dtype.kind not in "iu":
            raise UserError(f"{where} label must be a single integer, got numpy {value.dtype} {value.shape}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{where} label must be a single integer, got {type(value).__name__} {value!r}")
    if value < 0:
        raise UserError(f"{where} label must be >= 0, got {value}")
    return value


def _sample(dataset: Dataset, index: int, role: str) -> tuple[Any, Any]:
    item = dataset[index]
    if not isinstance(item, tuple | list) or len(item) != 2:
        raise UserError(f"{role}[{index}] must be an (input, label) pair, got {type(item).__name__}")
    return item[0], item[1]


def _shape(x: Any, where: str) -> tuple[int, ...]:
    if isinstance(x, torch.Tensor | np.ndarray):
        return tuple(int(d) for d in x.shape)
    raise UserError(
        f"{where} input must be a torch.Tensor or numpy array, got {type(x).__name__} "
        "(add a transform such as torchvision's ToTensor)"
    )


def _max_label(dataset: Dataset, role: str) -> int:
    if isinstance(dataset, TensorData):
        return int(dataset.y.max()) if len(dataset) else -1
    # Generic datasets: one pass over the labels. It loads every sample, which is why passing
    # num_classes explicitly is the fast path for large data sets.
    return max(
        (_label(_sample(dataset, i, role)[1], f"{role}[{i}]") for i in range(len(dataset))), default=-1
    )


def as_split(
    train: Dataset, val: Dataset, num_classes: int | None = None, *, name: str = "custom"
) -> DataSplit:
    """Wrap a user's own map-style datasets (items ``(input, int label)``) as a :class:`DataSplit`.

    ``input_shape`` comes from ``train[0][0]``; ``num_classes``, when not given, is the largest
    label in either set plus one.
    """
    for role, dataset in (("train", train), ("val", val)):
        if not isinstance(dataset, Sized) or not hasattr(dataset, "__getitem__"):
            raise UserError(
                f"{role} dataset must be a map-style torch.utils.data.Dataset with __len__ and "
                f"__getitem__, got {type(dataset).__name__}"
            )
    if len(train) == 0:
        raise UserError("train dataset is empty; it needs at least one sample")
    input_shape = _shape(_sample(train, 0, "train")[0], "train[0]")
    if len(val):
        val_shape = _shape(_sample(val, 0, "val")[0], "val[0]")
        if val_shape != input_shape:
            raise UserError(f"val[0] input has shape {val_shape} but train[0] has {input_shape}")

    if num_classes is None:
        num_classes = max(_max_label(train, "train"), _max_label(val, "val")) + 1
        if num_classes < 2:
            raise UserError("all labels are 0, so the number of classes cannot be inferred; pass num_classes")
    elif isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise UserError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    else:
        # A label past the head's width fails deep inside cross-entropy; catch it now where cheap.
        for role, dataset in (("train", train), ("val", val)):
            if isinstance(dataset, TensorData) and _max_label(dataset, role) >= num_classes:
                raise UserError(
                    f"{role} dataset has label {_max_label(dataset, role)} but num_classes is {num_classes}"
                )
    return DataSplit(name=name, train=train, val=val, input_shape=input_shape, num_classes=num_classes)

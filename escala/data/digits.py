"""scikit-learn's bundled 8x8 handwritten digits: a real data set that needs no download.

1797 grey-scale images, 10 classes. Small enough for unit tests and laptops, real enough that a
model which trains on it is doing something genuine.
"""

from __future__ import annotations

import numpy as np
import torch

from escala.data.split import DataSplit
from escala.data.tensors import TensorData
from escala.errors import UserError

# sklearn stores pixel intensities as integers 0..16.
_MAX_PIXEL = 16.0


def load_digits(val_fraction: float = 0.2, seed: int = 0) -> DataSplit:
    """Load the digits as a stratified train/validation split.

    Inputs have shape ``(1, 8, 8)`` (one channel, so convolutional models work unchanged), float32
    in ``[0, 1]``. The split is stratified by class and fixed by ``seed``, so every run and every
    process of a distributed job sees the same samples in the same partition.
    """
    # Imported here: sklearn's import is slow and only this loader needs it.
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < float(val_fraction) < 1.0:
        raise UserError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")

    bunch = sk_load_digits()
    x = (np.asarray(bunch.images, dtype=np.float32) / _MAX_PIXEL).reshape(-1, 1, 8, 8)
    y = np.asarray(bunch.target, dtype=np.int64)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=val_fraction, stratify=y, random_state=seed
    )
    return DataSplit(
        name="digits",
        train=TensorData(torch.from_numpy(np.ascontiguousarray(x_train)), torch.from_numpy(y_train)),
        val=TensorData(torch.from_numpy(np.ascontiguousarray(x_val)), torch.from_numpy(y_val)),
        input_shape=(1, 8, 8),
        num_classes=10,
    )

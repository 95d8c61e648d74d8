"""An in-memory classification dataset backed by two tensors.

Every built-in loader returns :class:`TensorData`: the data sets escala ships with fit in memory, and
holding them as one contiguous tensor lets samplers, benchmarks and ``as_split`` read labels and
shapes without iterating sample by sample.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class TensorData(Dataset):
    """Inputs ``x`` (float32, shape ``(N, *input_shape)``) and labels ``y`` (int64, shape ``(N,)``).

    Indexing returns the pair ``(x[i], y[i])``, the shape every escala training loop expects.
    Shape and dtype mistakes are programmer errors, so they raise :class:`ValueError` here rather
    than :class:`~escala.errors.UserError`; loaders that read user files check those files first.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise ValueError(
                f"TensorData needs torch tensors, got x={type(x).__name__}, y={type(y).__name__}"
            )
        if x.dtype != torch.float32:
            raise ValueError(f"TensorData x must be float32, got {x.dtype}")
        if y.dtype != torch.int64:
            raise ValueError(f"TensorData y must be int64, got {y.dtype}")
        if x.dim() < 2:
            # A sample needs at least one feature dimension; (N,) would make input_shape empty.
            raise ValueError(f"TensorData x must have shape (N, *input_shape), got {tuple(x.shape)}")
        if y.dim() != 1:
            raise ValueError(f"TensorData y must have shape (N,), got {tuple(y.shape)}")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"TensorData x has {x.shape[0]} samples but y has {y.shape[0]} labels")
        if any(d == 0 for d in x.shape[1:]):
            raise ValueError(f"TensorData input dimensions must be >= 1, got {tuple(x.shape[1:])}")
        if y.numel() and int(y.min()) < 0:
            # Cross-entropy indexes by label; a negative label fails far from where it was made.
            raise ValueError(f"TensorData labels must be >= 0, got minimum {int(y.min())}")
        self.x = x
        self.y = y

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, without the leading sample dimension."""
        return tuple(int(d) for d in self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        """Largest label plus one (0 for an empty set): the smallest valid classifier width."""
        return int(self.y.max()) + 1 if self.y.numel() else 0

    def __repr__(self) -> str:
        return f"TensorData(n={len(self)}, input_shape={self.input_shape})"

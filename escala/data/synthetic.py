"""A synthetic classification data set of any size and shape, for tests and scaling benchmarks.

Inputs are standard gaussian; labels come from a fixed random linear "teacher" (argmax of
``x @ W``). That makes the task exactly learnable by a linear model, so a training run that fails
to learn it points at the training code, not at the data. Everything is drawn from a local
``torch.Generator`` so the same seed gives bitwise the same data whatever else touched the global
RNG, which distributed ranks and resumed runs rely on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from escala.data.split import DataSplit
from escala.data.tensors import TensorData
from escala.errors import UserError


def _is_int(value: object) -> bool:
    # bool is an int subclass, but shape=(True, 8) is certainly a mistake.
    return isinstance(value, int) and not isinstance(value, bool)


def _validate(samples: int, shape: Sequence[int], classes: int, val_fraction: float) -> tuple[int, ...]:
    if not _is_int(samples) or samples < 2:
        raise UserError(f"synthetic samples must be an integer >= 2 (one train, one val), got {samples!r}")
    if not _is_int(classes) or classes < 2:
        raise UserError(f"synthetic classes must be an integer >= 2, got {classes!r}")
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or len(shape) == 0:
        raise UserError(f"synthetic shape must be a non-empty sequence of integers, got {shape!r}")
    if not all(_is_int(d) and d >= 1 for d in shape):
        raise UserError(f"synthetic shape dimensions must all be integers >= 1, got {tuple(shape)!r}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)):
        raise UserError(f"synthetic val_fraction must be a number, got {val_fraction!r}")
    if not 0.0 < float(val_fraction) < 1.0:
        raise UserError(f"synthetic val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    return tuple(int(d) for d in shape)


def make_synthetic(
    samples: int, shape: tuple[int, ...], classes: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``samples`` gaussian inputs of ``shape`` and their teacher labels (unvalidated)."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seed))
    features = math.prod(shape)
    # Draw the teacher first so it depends only on the seed, shape and class count, not on the
    # sample count: a bigger data set with the same seed poses the same task.
    teacher = torch.randn(features, classes, generator=generator, dtype=torch.float64)
    x = torch.randn(samples, *shape, generator=generator, dtype=torch.float32)
    # float64 logits make near-ties (which could flip between BLAS builds) vanishingly rare.
    logits = x.reshape(samples, features).to(torch.float64) @ teacher
    y = logits.argmax(dim=1)
    return x, y


def load_synthetic(
    samples: int = 4096,
    shape: tuple[int, ...] = (1, 8, 8),
    classes: int = 10,
    seed: int = 0,
    val_fraction: float = 0.2,
) -> DataSplit:
    """A deterministic, learnable synthetic split with ``samples`` examples in total.

    ``round(samples * val_fraction)`` examples (at least one, and leaving at least one for
    training) form the validation set. Some classes may be rare or absent when the inputs have few
    features, but ``num_classes`` is always ``classes`` so the model width follows the request.
    """
    shape = _validate(samples, shape, classes, val_fraction)
    x, y = make_synthetic(samples, shape, classes, seed)
    n_val = min(max(1, round(samples * val_fraction)), samples - 1)
    n_train = samples - n_val
    # Samples are i.i.d. draws, so a contiguous cut is already a random split. clone() so each set
    # owns its storage instead of pinning the whole tensor through a view.
    return DataSplit(
        name="synthetic",
        train=TensorData(x[:n_train].clone(), y[:n_train].clone()),
        val=TensorData(x[n_train:].clone(), y[n_train:].clone()),
        input_shape=shape,
        num_classes=classes,
    )

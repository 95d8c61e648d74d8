"""Argument checks shared by the model constructors.

Every model can be built straight from a config file, so bad shapes must surface as one-line
:class:`~escala.errors.UserError` messages naming the field, not as a shape error deep inside a
forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence

from escala.errors import UserError


def _is_int(value: object) -> bool:
    # bool is a subclass of int, but `True` as a layer width is always a config mistake.
    return isinstance(value, int) and not isinstance(value, bool)


def check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    """Return ``input_shape`` as a tuple of positive ints (one sample, no batch dimension)."""
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise UserError(f"input_shape {input_shape!r} must be a tuple of positive ints, e.g. (1, 28, 28)")
    shape = tuple(input_shape)
    if not shape or not all(_is_int(d) and d >= 1 for d in shape):
        raise UserError(f"input_shape {shape!r} must be a non-empty tuple of positive ints, e.g. (1, 28, 28)")
    return shape


def check_num_classes(num_classes: int) -> int:
    """Return ``num_classes`` after checking it is an int >= 1."""
    if not _is_int(num_classes) or num_classes < 1:
        raise UserError(f"num_classes {num_classes!r} must be an int >= 1")
    return num_classes


def check_image_shape(model: str, input_shape: Sequence[int], min_size: int = 1) -> tuple[int, int, int]:
    """Return ``(C, H, W)`` for a convolutional model, or raise a one-line :class:`UserError`."""
    shape = check_input_shape(input_shape)
    if len(shape) != 3:
        raise UserError(
            f"model '{model}' needs (C, H, W) input_shape; got {shape!r} "
            f"(a {len(shape)}-d shape; use 'mlp' or 'lenet300' for flat features)"
        )
    c, h, w = shape
    if min(h, w) < min_size:
        raise UserError(
            f"model '{model}' needs images of at least {min_size}x{min_size}; got input_shape {shape!r}"
        )
    return c, h, w


def check_hidden(hidden: Sequence[int]) -> tuple[int, ...]:
    """Return MLP hidden widths as a tuple of ints >= 1 (empty means a linear classifier)."""
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise UserError(f"hidden {hidden!r} must be a tuple of layer widths >= 1, e.g. (128, 64)")
    widths = tuple(hidden)
    if not all(_is_int(h) and h >= 1 for h in widths):
        raise UserError(f"hidden {widths!r} must contain only layer widths >= 1, e.g. (128, 64)")
    return widths


def check_dropout(dropout: float) -> float:
    """Return ``dropout`` as a float in [0, 1); p = 1 would zero every activation."""
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise UserError(f"dropout {dropout!r} must be a number in [0, 1)")
    return float(dropout)

"""Model zoo: build a network by name from a config.

* ``mlp``: :class:`~escala.models.mlp.MLP` (uses ``hidden`` and ``dropout``); any input shape.
* ``lenet300``: LeNet-300-100 (LeCun et al. 1998; Han et al. 2015), uses ``dropout``; any shape.
* ``lenet5``: :class:`~escala.models.lenet5.LeNet5` (LeCun et al. 1998); (C, H, W), H, W >= 4.
* ``resnet20``: CIFAR ResNet-20 (He et al. 2016); (C, H, W).
* ``resnet50``: ImageNet ResNet-50, torchvision v1.5 layout (He et al. 2016); (C, H, W).
* ``lstm``: :class:`~escala.models.lstm.LSTMClassifier`, a stacked LSTM reading an image row by row
  (one layer per ``hidden`` width); (C, H, W), (T, F) or (F,).

Every model is an ``nn.Sequential`` with named children, so parallelism and pruning code can walk
and cut them by name.
"""

from __future__ import annotations

from torch import nn

from escala.errors import UserError
from escala.models._checks import check_dropout, check_hidden, check_image_shape, check_input_shape
from escala.models.lenet5 import LeNet5
from escala.models.lstm import LSTMClassifier
from escala.models.mlp import MLP, lenet300
from escala.models.resnet import ResNet, resnet20, resnet50

MODELS: tuple[str, ...] = ("mlp", "lenet300", "lenet5", "resnet20", "resnet50", "lstm")
# Models built from convolutions; they need an image shape (C, H, W), not flat features.
CONV_MODELS: frozenset[str] = frozenset({"lenet5", "resnet20", "resnet50"})

__all__ = [
    "CONV_MODELS",
    "LSTMClassifier",
    "MLP",
    "MODELS",
    "LeNet5",
    "ResNet",
    "build_model",
    "count_parameters",
    "lenet300",
    "resnet20",
    "resnet50",
]


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    hidden: tuple[int, ...] = (128, 64),
    dropout: float = 0.0,
) -> nn.Module:
    """Build model ``name`` for samples of ``input_shape`` (no batch dimension) and ``num_classes``.

    ``hidden`` is used by ``mlp`` and ``lstm`` (one LSTM layer per width); ``dropout`` by ``mlp`` and ``lenet300``. Both are checked
    for every model so a bad config value is reported even where it would be ignored.

    Raises:
        UserError: unknown ``name``, a conv model given a non-(C, H, W) shape, ``hidden`` widths < 1,
            ``dropout`` outside [0, 1), or a non-positive shape or class count.
    """
    if name not in MODELS:
        raise UserError(f"model {name!r} is unknown; choose one of {', '.join(MODELS)}")
    hidden = check_hidden(hidden)
    dropout = check_dropout(dropout)
    shape = check_input_shape(input_shape)
    if name in CONV_MODELS:
        # Checked here too (the constructors check again) so the message names the model first.
        check_image_shape(name, shape)

    if name == "mlp":
        return MLP(shape, num_classes, hidden=hidden, dropout=dropout)
    if name == "lenet300":
        return lenet300(shape, num_classes, dropout=dropout)
    if name == "lenet5":
        return LeNet5(shape, num_classes)
    if name == "resnet20":
        return resnet20(shape, num_classes)
    if name == "lstm":
        return LSTMClassifier(shape, num_classes, hidden=hidden)
    return resnet50(shape, num_classes)


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements in ``model``, trainable or not (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters())

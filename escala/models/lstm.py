"""A stacked-LSTM classifier that reads an image row by row (``--model lstm``).

Each row of a ``(C, H, W)`` image is one time step of ``C x W`` features (digits: 8 steps of 8,
MNIST: 28 steps of 28, the "sequential MNIST by rows" set-up of Le, Jaitly and Hinton, "A Simple Way
to Initialize Recurrent Networks of Rectified Linear Units", 2015); a 2-D sample ``(T, F)`` is taken
as T steps of F features and a flat one ``(F,)`` as F steps of one feature. The hidden state of the
top layer after the last step goes through a Linear classifier. The LSTM cell is Hochreiter and
Schmidhuber's (1997) with a forget gate, as ``nn.LSTM`` computes it:

    i, f, g, o = sigma(W_i [x_t, h_{t-1}] + b_i), sigma(...), tanh(...), sigma(...)
    c_t = f * c_{t-1} + i * g,    h_t = o * tanh(c_t)

Layer widths come from the config's ``hidden`` field, one entry per LSTM layer (layers may differ in
width). Like every zoo model it is an ``nn.Sequential`` with named children ``rows, lstm1, ...,
lstmL, last, fc``, so ``--pipeline K`` can give each process a contiguous group of LSTM layers and
pipeline them over time steps (:mod:`escala.parallel.model.strategies.recurrent`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from escala.errors import UserError
from escala.models._checks import check_hidden, check_input_shape, check_num_classes
from escala.models._sequential import NamedSequential


def sequence_shape(input_shape: Sequence[int]) -> tuple[int, int]:
    """(time steps, features per step) of one sample read as a sequence."""
    shape = check_input_shape(input_shape)
    if len(shape) == 1:
        return shape[0], 1
    if len(shape) == 2:
        return shape[0], shape[1]
    if len(shape) == 3:
        c, h, w = shape
        return h, c * w
    raise UserError(f"model 'lstm' reads (C, H, W), (T, F) or (F,) samples; got input_shape {shape!r}")


class Rows(nn.Module):
    """Reshape a batch of samples into ``(N, T, F)`` sequences: image rows become time steps."""

    def __init__(self, input_shape: Sequence[int]) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.steps, self.features = sequence_shape(input_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.input_shape) == 3:  # (N, C, H, W) -> (N, H, C, W) -> (N, H, C*W)
            x = x.permute(0, 2, 1, 3)
        return x.reshape(x.shape[0], self.steps, self.features)


class LSTMLayer(nn.LSTM):
    """One batch-first LSTM layer whose forward returns only the outputs ``(N, T, H)`` of every step
    (so it fits an ``nn.Sequential``); parameters are ``weight_ih_l0`` etc. as in ``nn.LSTM``."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size, num_layers=1, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)[0]


class LastStep(nn.Module):
    """``(N, T, H) -> (N, H)``: the output of the last time step."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -1]


class LSTMClassifier(NamedSequential):
    """Stacked LSTM over the rows of a sample, then a Linear classifier on the last hidden state.

    Args:
        input_shape: one sample's shape, see :func:`sequence_shape`.
        num_classes: width of the output logits.
        hidden: the hidden width of each LSTM layer, bottom first (at least one layer).
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (128, 64)) -> None:
        shape = check_input_shape(input_shape)
        num_classes = check_num_classes(num_classes)
        widths = check_hidden(hidden)
        if not widths:
            raise UserError("model 'lstm' needs at least one layer in hidden, e.g. --hidden 64,64")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["rows"] = Rows(shape)
        size = layers["rows"].features
        for i, width in enumerate(widths, start=1):
            layers[f"lstm{i}"] = LSTMLayer(size, width)
            size = width
        layers["last"] = LastStep()
        layers["fc"] = nn.Linear(size, num_classes)
        super().__init__(layers)
        self.input_shape, self.num_classes, self.hidden = shape, num_classes, widths
        self.steps, self.features = sequence_shape(shape)
        # Forget-gate bias 1 (Gers, Schmidhuber and Cummins 2000; Jozefowicz et al. 2015): gradients
        # flow through c_t from the start. The gate order in nn.LSTM is i, f, g, o.
        for i in range(1, len(widths) + 1):
            layer = layers[f"lstm{i}"]
            h = layer.hidden_size
            with torch.no_grad():
                layer.bias_ih_l0[h : 2 * h].fill_(1.0)
                layer.bias_hh_l0[h : 2 * h].zero_()

    @property
    def lstm_layers(self) -> list[str]:
        return [name for name, m in self.named_children() if isinstance(m, LSTMLayer)]


def lstm_parameter_count(features: int, widths: Sequence[int], num_classes: int) -> int:
    """4 (H (F + H) + 2 H) per layer, then H_L K + K for the classifier (used by the tests)."""
    total, size = 0, features
    for h in widths:
        total += 4 * (h * (size + h) + 2 * h)
        size = h
    return total + size * num_classes + num_classes

"""Multi-layer perceptrons: a configurable MLP and LeNet-300-100.

LeNet-300-100 is the fully connected baseline of LeCun, Bottou, Bengio and Haffner, "Gradient-based
learning applied to document recognition", Proc. IEEE 86(11), 1998; it is the MNIST model that Han,
Pool, Tran and Dally prune in "Learning both weights and connections for efficient neural networks",
NeurIPS 2015 (266,610 parameters for 784 inputs and 10 classes).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from escala.models._checks import check_dropout, check_hidden, check_input_shape, check_num_classes
from escala.models._sequential import NamedSequential

LENET300_HIDDEN: tuple[int, int] = (300, 100)


class MLP(NamedSequential):
    """Flatten, then ``Linear -> ReLU (-> Dropout)`` per hidden width, then a ``Linear`` classifier.

    The model *is* an ``nn.Sequential`` whose children are named ``flatten, fc1, relu1, [drop1,]
    fc2, ..., fcN`` so pruning and pipeline code can address layers by readable names
    (``model.fc1``) and cut the sequence into stages.

    Args:
        input_shape: shape of one sample without the batch dimension; any rank, it is flattened.
        num_classes: width of the output logits.
        hidden: widths of the hidden layers; ``()`` gives a linear (softmax-regression) model.
        dropout: dropout probability after each hidden ReLU; 0 adds no dropout modules at all.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hidden: Sequence[int] = (128, 64),
        dropout: float = 0.0,
    ) -> None:
        shape = check_input_shape(input_shape)
        num_classes = check_num_classes(num_classes)
        widths = check_hidden(hidden)
        p = check_dropout(dropout)

        layers: OrderedDict[str, nn.Module] = OrderedDict()
        # Flatten from dim 1 so the batch dimension survives whatever the sample rank is.
        layers["flatten"] = nn.Flatten(start_dim=1)
        in_features = math.prod(shape)
        for i, width in enumerate(widths, start=1):
            layers[f"fc{i}"] = nn.Linear(in_features, width)
            # Not in-place: a forward hook on fc{i} (activation statistics, pruning) must see the
            # pre-activation output, which an in-place ReLU would overwrite.
            layers[f"relu{i}"] = nn.ReLU()
            if p > 0:
                # Only materialise Dropout when it does something: fewer no-op modules to walk.
                layers[f"drop{i}"] = nn.Dropout(p)
            in_features = width
        layers[f"fc{len(widths) + 1}"] = nn.Linear(in_features, num_classes)
        super().__init__(layers)

        self.input_shape: tuple[int, ...] = shape
        self.num_classes: int = num_classes
        self.hidden: tuple[int, ...] = widths
        self.dropout: float = p


def lenet300(input_shape: Sequence[int], num_classes: int, dropout: float = 0.0) -> MLP:
    """LeNet-300-100 (LeCun et al. 1998; Han et al. 2015): an :class:`MLP` with hidden (300, 100).

    Children are ``flatten, fc1, relu1, fc2, relu2, fc3`` (plus ``drop1``/``drop2`` if ``dropout > 0``).
    """
    return MLP(input_shape, num_classes, hidden=LENET300_HIDDEN, dropout=dropout)

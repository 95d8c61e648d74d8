"""LeNet-5, the convolutional network of LeCun, Bottou, Bengio and Haffner, "Gradient-based learning
applied to document recognition", Proc. IEEE 86(11), 1998.

The modern reading is used: ReLU instead of scaled tanh, max-pooling instead of trainable
sub-sampling, and a full C3 connection table. The layer widths are the paper's (6 and 16 maps of
5x5 kernels, then 120, 84 and ``num_classes`` units).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from escala.models._checks import check_image_shape, check_num_classes
from escala.models._sequential import NamedSequential

# The paper's network takes 32x32 images; MNIST's 28x28 digits were padded to 32x32 to get there.
_CLASSIC_SIZE = 32
_KERNEL = 5
_PAD = 2  # (5 - 1) / 2: "same" padding for a 5x5 kernel
# Two "same"-padded 5x5 convs each followed by a 2x2 pool need a side of at least 4 to keep >= 1 pixel.
MIN_SIZE = 4


def _paddings(side: int) -> tuple[int, int]:
    """Padding of conv1 and conv2 along one spatial side of length ``side``.

    conv1 pads by 2 below the classic 32 pixels, which for 28x28 is exactly the paper's MNIST set-up
    (28 + 2*2 = 32). conv2 stays unpadded, as in the paper, while its input is at least 6 pixels (so
    conv2 leaves >= 2 for the pool); smaller inputs such as 8x8 digits get padding 2 there too.
    """
    pad1 = 0 if side >= _CLASSIC_SIZE else _PAD
    after_pool1 = (side + 2 * pad1 - _KERNEL + 1) // 2
    pad2 = 0 if after_pool1 - _KERNEL + 1 >= 2 else _PAD
    return pad1, pad2


class LeNet5(NamedSequential):
    """LeNet-5 (LeCun et al. 1998) for ``(C, H, W)`` images with any channel count and H, W >= 4.

    The model *is* a flat ``nn.Sequential`` with children ``conv1, relu1, pool1, conv2, relu2,
    pool2, flatten, fc1, relu3, fc2, relu4, fc3`` so pipeline parallelism can cut it anywhere and
    pruning can address layers by name. The flattened size after ``pool2`` is measured with one dummy
    forward at construction, so nothing about the spatial arithmetic is hard-coded.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        channels, height, width = check_image_shape("lenet5", input_shape, min_size=MIN_SIZE)
        num_classes = check_num_classes(num_classes)
        (pad1_h, pad2_h), (pad1_w, pad2_w) = _paddings(height), _paddings(width)

        features: OrderedDict[str, nn.Module] = OrderedDict(
            [
                ("conv1", nn.Conv2d(channels, 6, _KERNEL, padding=(pad1_h, pad1_w))),
                # Not in-place: hooks on conv layers must see the pre-activation output.
                ("relu1", nn.ReLU()),
                ("pool1", nn.MaxPool2d(2)),
                ("conv2", nn.Conv2d(6, 16, _KERNEL, padding=(pad2_h, pad2_w))),
                ("relu2", nn.ReLU()),
                ("pool2", nn.MaxPool2d(2)),
                ("flatten", nn.Flatten(start_dim=1)),
            ]
        )
        with torch.no_grad():
            probe = nn.Sequential(features)
            flat = probe(torch.zeros(1, channels, height, width)).shape[1]

        classifier = OrderedDict(
            [
                ("fc1", nn.Linear(flat, 120)),
                ("relu3", nn.ReLU()),
                ("fc2", nn.Linear(120, 84)),
                ("relu4", nn.ReLU()),
                ("fc3", nn.Linear(84, num_classes)),
            ]
        )
        super().__init__(OrderedDict([*features.items(), *classifier.items()]))

        self.input_shape: tuple[int, int, int] = (channels, height, width)
        self.num_classes: int = num_classes
        self.flat_features: int = flat

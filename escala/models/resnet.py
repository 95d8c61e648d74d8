"""Residual networks of He, Zhang, Ren and Sun, "Deep residual learning for image recognition",
CVPR 2016 (arXiv:1512.03385).

* :func:`resnet20` is the CIFAR-10 network of the paper's section 4.2 (n = 3: 6n + 2 = 20 layers,
  16/32/64 channels). Shortcuts that change shape use projection (the paper's option B: 1x1 conv +
  BN) rather than option A's zero padding, so every block is an ordinary module; that adds 2,752
  parameters over the paper's ~0.27M.
* :func:`resnet50` is the ImageNet network of the paper's table 1, laid out as torchvision's "v1.5":
  the stride-2 of each down-sampling bottleneck sits on the 3x3 conv, not the first 1x1. It has
  25,557,032 parameters for 3x224x224 inputs and 1000 classes, the same as torchvision's.

Both models *are* ``nn.Sequential``s with torchvision-style child names (``conv1, bn1, relu,
[maxpool,] layer1, ..., avgpool, flatten, fc``) so pipeline code can cut between stages and
state-dict keys are exactly torchvision's. Both end in adaptive average pooling, so any H x W works.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from escala.models._checks import check_image_shape, check_num_classes
from escala.models._sequential import NamedSequential


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    # No bias: every conv is followed by BatchNorm, whose shift makes a conv bias redundant.
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)


def _projection(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    """Option-B shortcut: 1x1 conv (strided like the block) + BN, used only where shapes change.

    Children are ``0`` (conv) and ``1`` (BN) so state-dict keys (``layer2.0.downsample.0.weight``)
    match torchvision's and its checkpoints load without renaming.
    """
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (He et al. 2016, fig. 2 left)."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = _conv3x3(in_ch, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        # Not in-place: a hook on bn1/bn2 must still see the pre-activation tensor.
        self.relu = nn.ReLU()
        self.downsample = _projection(in_ch, out_ch, stride) if stride != 1 or in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (strided) -> 1x1 expand by 4, with a residual connection (fig. 5 right)."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        # v1.5: the stride lives on the 3x3 conv; a strided 1x1 would skip 3/4 of the input pixels.
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU()
        self.downsample = _projection(in_ch, out_ch, stride) if stride != 1 or in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(NamedSequential):
    """A stem, stages of residual blocks, global average pooling and a linear classifier.

    Args:
        input_shape: ``(C, H, W)``; C sets the stem's input channels, H and W only need to be >= 1
            because pooling at the end is adaptive (very small images lose resolution early, and
            BatchNorm in training mode needs more than one value per channel, i.e. batch x H x W > 1
            at the last stage).
        num_classes: width of the output logits.
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        blocks_per_stage: number of blocks in each stage; stage ``i`` doubles the width of ``i - 1``
            and (from the second stage on) halves the resolution with a stride-2 first block.
        base_width: width (``planes``) of the first stage.
        imagenet_stem: 7x7 stride-2 conv + 3x3 stride-2 max-pool (ImageNet) instead of a single 3x3
            stride-1 conv (CIFAR).
        name: model name used in error messages.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        block: type[BasicBlock] | type[Bottleneck],
        blocks_per_stage: Sequence[int],
        base_width: int,
        imagenet_stem: bool,
        name: str = "resnet",
    ) -> None:
        channels, height, width = check_image_shape(name, input_shape)
        num_classes = check_num_classes(num_classes)

        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if imagenet_stem:
            layers["conv1"] = nn.Conv2d(channels, base_width, 7, stride=2, padding=3, bias=False)
        else:
            layers["conv1"] = _conv3x3(channels, base_width)
        layers["bn1"] = nn.BatchNorm2d(base_width)
        layers["relu"] = nn.ReLU()
        if imagenet_stem:
            layers["maxpool"] = nn.MaxPool2d(3, stride=2, padding=1)

        in_ch = base_width
        for stage, num_blocks in enumerate(blocks_per_stage):
            planes = base_width * 2**stage
            stride = 1 if stage == 0 else 2
            stage_blocks = []
            for i in range(num_blocks):
                stage_blocks.append(block(in_ch, planes, stride if i == 0 else 1))
                in_ch = planes * block.expansion
            layers[f"layer{stage + 1}"] = nn.Sequential(*stage_blocks)

        layers["avgpool"] = nn.AdaptiveAvgPool2d(1)
        layers["flatten"] = nn.Flatten(start_dim=1)
        layers["fc"] = nn.Linear(in_ch, num_classes)
        super().__init__(layers)

        self.input_shape: tuple[int, int, int] = (channels, height, width)
        self.num_classes: int = num_classes
        self._init_weights()

    def _init_weights(self) -> None:
        # He et al. 2016 train from the "MSRA" initialisation of He et al. 2015 (arXiv:1502.01852):
        # fan-out Kaiming normal for convs; BatchNorm starts as the identity (PyTorch's default).
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


def resnet20(input_shape: Sequence[int], num_classes: int) -> ResNet:
    """CIFAR ResNet-20 (He et al. 2016, sec. 4.2): 3 stages x 3 basic blocks, 16/32/64 channels.

    About 0.27M parameters (272,474) for 3x32x32 inputs and 10 classes; works for any H, W >= 4.
    """
    return ResNet(input_shape, num_classes, BasicBlock, (3, 3, 3), 16, imagenet_stem=False, name="resnet20")


def resnet50(input_shape: Sequence[int], num_classes: int) -> ResNet:
    """ImageNet ResNet-50 (He et al. 2016, table 1), torchvision v1.5 layout: bottlenecks [3, 4, 6, 3].

    25,557,032 parameters for 3x224x224 inputs and 1000 classes. Meant for inputs >= 32x32; smaller
    ones run but are down-sampled to 1x1 by the last stage.
    """
    return ResNet(input_shape, num_classes, Bottleneck, (3, 4, 6, 3), 64, imagenet_stem=True, name="resnet50")

"""The one-channel AlexNet of "Dive into Deep Learning" (section 8.1).

conv 96@11x11/4 pad 1, max pool 3/2, conv 256@5x5 pad 2, pool, conv 384, 384,
256 @3x3 pad 1, pool, then 4096 -> 4096 -> classes with dropout 0.5. The
first fully connected layer depends on the input size: at 112x112 (the note's
choice) the flatten is 256x2x2 = 1,024 and the model has 24,744,650
parameters ("24.74M"); at d2l's 224x224 it is 256x5x5 = 6,400 and 46,764,746.
PyTorch's default init.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .dropout import Dropout


def _conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def feature_size(image_size: int) -> int:
    """Spatial size after the convolutional stack, for a square input."""
    s = _conv_out(image_size, 11, 4, 1)
    s = _conv_out(s, 3, 2)
    s = _conv_out(s, 5, 1, 2)
    s = _conv_out(s, 3, 2)
    return _conv_out(s, 3, 2)


class AlexNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 112,
                 dropout: float = 0.5) -> None:
        super().__init__()
        side = feature_size(image_size)
        if side < 1:
            raise ValueError(f"AlexNet needs an input of at least 63x63, got {image_size}")
        self.image_size = image_size
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(in_channels, 96, kernel_size=11, stride=4, padding=1)),
            ("relu1", nn.ReLU(inplace=True)), ("pool1", nn.MaxPool2d(kernel_size=3, stride=2)),
            ("conv2", nn.Conv2d(96, 256, kernel_size=5, padding=2)),
            ("relu2", nn.ReLU(inplace=True)), ("pool2", nn.MaxPool2d(kernel_size=3, stride=2)),
            ("conv3", nn.Conv2d(256, 384, kernel_size=3, padding=1)), ("relu3", nn.ReLU(inplace=True)),
            ("conv4", nn.Conv2d(384, 384, kernel_size=3, padding=1)), ("relu4", nn.ReLU(inplace=True)),
            ("conv5", nn.Conv2d(384, 256, kernel_size=3, padding=1)),
            ("relu5", nn.ReLU(inplace=True)), ("pool5", nn.MaxPool2d(kernel_size=3, stride=2)),
        ]))
        self.classifier = nn.Sequential(OrderedDict([
            ("flatten", nn.Flatten()),
            ("fc6", nn.Linear(256 * side * side, 4096)), ("relu6", nn.ReLU(inplace=True)),
            ("dropout6", Dropout(p=dropout)),
            ("fc7", nn.Linear(4096, 4096)), ("relu7", nn.ReLU(inplace=True)),
            ("dropout7", Dropout(p=dropout)),
            ("fc8", nn.Linear(4096, num_classes)),
        ]))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def alexnet(**kwargs) -> AlexNet:
    return AlexNet(**kwargs)

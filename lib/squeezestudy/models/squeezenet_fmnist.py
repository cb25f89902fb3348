"""The note's one-Fire SqueezeNet for Fashion-MNIST: 18,010 parameters ("0.02M").

Exactly the printed model of the note: conv1 (96 filters 7x7/2), max pooling,
ONE Fire module (16, 64, 64), max pooling, then the SqueezeNet classifier
(dropout 0.5, 1x1 conv to 10 classes, ReLU, global average pooling). The note
cut SqueezeNet to one Fire module because the full depth would overfit a data
set this small (notebook 09 measures that claim). On 28x28 input the feature
maps go 28 -> 11 -> 5 -> 5 -> 2. Its first ReLU runs after the max-pool that follows it
(`features.Features`): the same values and gradients, in less time.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .features import Features
from .fire import Fire
from .head import SqueezeNetBase


class SqueezeNetFashionMNIST(SqueezeNetBase):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, dropout: float = 0.5) -> None:
        features = Features(OrderedDict([
            ("conv1", nn.Conv2d(in_channels, 96, kernel_size=7, stride=2)),
            ("relu1", nn.ReLU(inplace=True)),
            ("maxpool1", nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)),
            ("fire2", Fire(96, 16, 64, 64)),
            ("maxpool2", nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)),
        ]))
        super().__init__(features, 128, num_classes, dropout)


def squeezenet_fmnist(**kwargs) -> SqueezeNetFashionMNIST:
    return SqueezeNetFashionMNIST(**kwargs)

"""SqueezeNet's head, shared by every SqueezeNet of the study (v1.0/v1.1 and the note's sketch,
the one-Fire model, the design-space model): no fully connected layer, but dropout, a 1x1
convolution to the classes (conv10), ReLU and global average pooling, flattened to logits.

A subclass builds its own `features` and hands them to `SqueezeNetBase.__init__`, which adds
the `classifier` head (module names as torchvision's, so state-dict keys are
`features.*` then `classifier.conv10.*`) and applies torchvision's init.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .dropout import Dropout


def classifier_head(in_channels: int, num_classes: int, dropout: float = 0.5) -> nn.Sequential:
    """SqueezeNet's head, no fully connected layer: dropout, conv10 (1x1), ReLU, global average pooling."""
    return nn.Sequential(OrderedDict([
        ("dropout", Dropout(p=dropout)),
        ("conv10", nn.Conv2d(in_channels, num_classes, kernel_size=1)),
        ("relu10", nn.ReLU(inplace=True)),
        ("avgpool10", nn.AdaptiveAvgPool2d((1, 1))),
    ]))  # fmt: skip


def init_squeezenet(model: nn.Module, final_conv: nn.Conv2d) -> None:
    """torchvision's init: Kaiming-uniform convolutions, N(0, 0.01) final conv, zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            if m is final_conv:
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
            else:
                nn.init.kaiming_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class SqueezeNetBase(nn.Module):
    """`features` (built by the subclass, `out_channels` wide) -> `classifier` head -> logits."""

    def __init__(self, features: nn.Sequential, out_channels: int, num_classes: int,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.features = features
        self.classifier = classifier_head(out_channels, num_classes, dropout)
        init_squeezenet(self, self.classifier.conv10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)

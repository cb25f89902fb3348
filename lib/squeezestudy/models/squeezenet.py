"""SqueezeNet v1.0 and v1.1 (Iandola et al. 2016), layer for layer as in the paper and torchvision.

v1.0 follows the paper's Table 1: conv1 96 filters 7x7/2, 3x3/2 max pooling
after conv1, fire4 and fire8, dropout 0.5 after fire9, conv10 then global
average pooling. v1.1 (the SqueezeNet repo's later version) uses 64 3x3/2
filters in conv1 and pools earlier: 2.4x less computation, same accuracy.
Pooling uses ceil_mode, as Caffe and torchvision do, so that 111 -> 55 -> 27 -> 13.

Where the note's Keras sketch differs: it uses 2x2 pooling and "same" padding
in conv1; see notebook 03 for what that changes.

The classifier head and the init (as torchvision: Kaiming-uniform for every
convolution, N(0, 0.01) for conv10, zero biases) are SqueezeNetBase's (head.py).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .fire import Fire, with_bypass
from .head import SqueezeNetBase

# (name, in, squeeze, expand1x1, expand3x3) per Fire module, and where pooling sits.
FIRE_CONFIGS = {
    "1_0": [
        ("fire2", 96, 16, 64, 64), ("fire3", 128, 16, 64, 64), ("fire4", 128, 32, 128, 128),
        ("maxpool4",), ("fire5", 256, 32, 128, 128), ("fire6", 256, 48, 192, 192),
        ("fire7", 384, 48, 192, 192), ("fire8", 384, 64, 256, 256), ("maxpool8",),
        ("fire9", 512, 64, 256, 256),
    ],
    "1_1": [
        ("fire2", 64, 16, 64, 64), ("fire3", 128, 16, 64, 64), ("maxpool3",),
        ("fire4", 128, 32, 128, 128), ("fire5", 256, 32, 128, 128), ("maxpool5",),
        ("fire6", 256, 48, 192, 192), ("fire7", 384, 48, 192, 192),
        ("fire8", 384, 64, 256, 256), ("fire9", 512, 64, 256, 256),
    ],
}  # fmt: skip
CONV1 = {"1_0": (96, 7), "1_1": (64, 3)}


class SqueezeNet(SqueezeNetBase):
    def __init__(
        self,
        version: str = "1_0",
        num_classes: int = 1000,
        in_channels: int = 3,
        bypass: str = "none",
        dropout: float = 0.5,
        sketch: bool = False,
    ) -> None:
        if version not in FIRE_CONFIGS:
            raise ValueError(f"unknown SqueezeNet version {version!r}; use '1_0' or '1_1'")
        if num_classes < 1 or in_channels < 1:
            raise ValueError("num_classes and in_channels must be positive")
        filters, kernel = CONV1[version]

        def pool() -> nn.MaxPool2d:
            # the note's Keras sketch: Keras' default 2x2/2 pooling; the paper: 3x3/2
            if sketch:
                return nn.MaxPool2d(kernel_size=2, stride=2)
            return nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)

        layers: list[tuple[str, nn.Module]] = [
            ("conv1", nn.Conv2d(in_channels, filters, kernel_size=kernel, stride=2,
                                padding=kernel // 2 if sketch else 0)),  # sketch: "same"
            ("relu1", nn.ReLU(inplace=True)),
            ("maxpool1", pool()),
        ]
        for cfg in FIRE_CONFIGS[version]:
            if len(cfg) == 1:
                layers.append((cfg[0], pool()))
            else:
                layers.append((cfg[0], with_bypass(Fire(*cfg[1:]), bypass)))
        super().__init__(nn.Sequential(OrderedDict(layers)), 512, num_classes, dropout)
        self.version, self.bypass = version, bypass


def squeezenet1_0(**kwargs) -> SqueezeNet:
    """SqueezeNet v1.0, the paper's Table 1: 1,248,424 parameters at 1000 classes."""
    return SqueezeNet("1_0", **kwargs)


def squeezenet1_1(**kwargs) -> SqueezeNet:
    """SqueezeNet v1.1: 1,235,496 parameters at 1000 classes, 2.4x fewer multiply-adds."""
    return SqueezeNet("1_1", **kwargs)


def squeezenet_sketch(**kwargs) -> SqueezeNet:
    """The note's Keras sketch of v1.0: 2x2 pooling and "same" padding in conv1."""
    return SqueezeNet("1_0", sketch=True, **kwargs)


def load_torchvision_weights(model: nn.Module, torchvision_state: dict[str, torch.Tensor]) -> None:
    """Copy a torchvision SqueezeNet state dict into ours.

    The two share layer order and shapes but not names (ours are named, not
    numbered), so tensors are matched in order, each shape checked.
    """
    ours = model.state_dict()
    if len(ours) != len(torchvision_state):
        raise ValueError(
            f"{len(torchvision_state)} tensors in the torchvision state dict, {len(ours)} in ours: "
            "a bypass variant or a different version?"
        )
    mapped = {}
    for (name, mine), (tv_name, theirs) in zip(ours.items(), torchvision_state.items(), strict=True):
        if mine.shape != theirs.shape:
            raise ValueError(f"{name} {tuple(mine.shape)} vs torchvision {tv_name} {tuple(theirs.shape)}")
        mapped[name] = theirs
    model.load_state_dict(mapped)

"""SqueezeNet from the paper's metaparameters (section 5), for the design-space experiments.

Fire module i (i = 0..7, i.e. fire2..fire9) has
    e_i = base_e + incr_e * floor(i / freq)   expand filters,
    e_i * pct3x3 of them 3x3 and the rest 1x1,
    s_i = SR * e_i                            squeeze filters.
base_e=128, incr_e=128, pct3x3=0.5, freq=2, SR=0.125 is SqueezeNet v1.0.

stem="imagenet" keeps v1.0's conv1 (96 7x7/2) and pooling (after conv1, fire4, fire8), so the
defaults rebuild v1.0 exactly. stem="fmnist" sizes the network for 28x28 input with v1.0's
proportions: on 224x224, Fire 2-4 see 55x55 (1/4 of the side) and Fire 5-8 27x27 (1/8). Here
conv1 is 3x3/2 (padding 1), 28 -> 14, and two 3x3/2 poolings give Fire 2-4 7x7 and Fire 5-9 3x3;
v1.0's last pooling (to 1/16) is left out, as it would leave Fire 9's 3x3 filters a 1x1 map.

squeeze_norm=True adds batch norm after each squeeze convolution (`Fire`): outside the paper's
family (which has no batch norm), the labelled variant of the headline search (issue 9).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .fire import Fire, with_bypass
from .head import SqueezeNetBase

# conv1 (kernel, stride, padding) and the Fire indices that a 3x3/2 max pool precedes
STEMS = {
    "imagenet": ((7, 2, 0), (0, 3, 7)),
    "fmnist": ((3, 2, 1), (0, 3)),
}
POOL_NAMES = {0: "maxpool1", 3: "maxpool4", 7: "maxpool8"}


def fire_sizes(base_e: int = 128, incr_e: int = 128, pct3x3: float = 0.5, freq: int = 2,
               sr: float = 0.125, modules: int = 8) -> list[tuple[int, int, int]]:
    """(squeeze, expand1x1, expand3x3) of each Fire module."""
    if not 0 <= pct3x3 <= 1:
        raise ValueError(f"pct3x3 must be in [0, 1], got {pct3x3}")
    if sr <= 0 or base_e < 1 or incr_e < 0 or freq < 1 or modules < 1:
        raise ValueError("need sr > 0, base_e >= 1, incr_e >= 0, freq >= 1, modules >= 1")
    sizes = []
    for i in range(modules):
        e = base_e + incr_e * (i // freq)
        e3 = round(e * pct3x3)
        sizes.append((max(1, round(sr * e)), e - e3, e3))
    return sizes


class SqueezeNetDesign(SqueezeNetBase):
    def __init__(self, base_e: int = 128, incr_e: int = 128, pct3x3: float = 0.5, freq: int = 2,
                 sr: float = 0.125, num_classes: int = 10, in_channels: int = 1, stem: str = "fmnist",
                 bypass: str = "none", dropout: float = 0.5, conv1_filters: int = 96,
                 squeeze_norm: bool = False) -> None:
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; use one of {sorted(STEMS)}")
        (kernel, stride, padding), pools = STEMS[stem]
        layers: list[tuple[str, nn.Module]] = [
            ("conv1", nn.Conv2d(in_channels, conv1_filters, kernel, stride=stride, padding=padding)),
            ("relu1", nn.ReLU(inplace=True)),
        ]
        channels = conv1_filters
        for i, (s, e1, e3) in enumerate(fire_sizes(base_e, incr_e, pct3x3, freq, sr)):
            if i in pools:
                layers.append((POOL_NAMES[i], nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)))
            layers.append((f"fire{i + 2}", with_bypass(Fire(channels, s, e1, e3, squeeze_norm), bypass)))
            channels = e1 + e3
        super().__init__(nn.Sequential(OrderedDict(layers)), channels, num_classes, dropout)
        self.metaparameters = {"base_e": base_e, "incr_e": incr_e, "pct3x3": pct3x3,
                               "freq": freq, "sr": sr}


def squeezenet_design(**kwargs) -> SqueezeNetDesign:
    return SqueezeNetDesign(**kwargs)

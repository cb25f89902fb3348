"""The Fire module (Iandola et al. 2016, section 3.2): squeeze 1x1, then expand 1x1 and 3x3."""

from __future__ import annotations

import torch
from torch import nn


class Fire(nn.Module):
    """squeeze (s1x1 filters, 1x1) -> [expand1x1 (e1x1, 1x1) | expand3x3 (e3x3, 3x3)].

    ReLU follows every convolution; the two expand outputs are concatenated
    along channels, so the module emits e1x1 + e3x3 channels. Layer names
    match torchvision's `Fire`. `squeeze_norm=True` puts batch norm between the
    squeeze convolution and its ReLU: not the paper's module, a labelled variant.
    """

    def __init__(self, in_channels: int, squeeze: int, expand1x1: int, expand3x3: int,
                 squeeze_norm: bool = False) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("squeeze", squeeze)):
            if value < 1:
                raise ValueError(f"Fire: {name} must be at least 1, got {value}")
        if expand1x1 < 0 or expand3x3 < 0 or expand1x1 + expand3x3 < 1:
            raise ValueError(
                f"Fire: expand1x1={expand1x1}, expand3x3={expand3x3}; both must be >= 0 "
                "and at least one positive"
            )
        self.in_channels = in_channels
        self.out_channels = expand1x1 + expand3x3
        self.squeeze = nn.Conv2d(in_channels, squeeze, kernel_size=1)
        self.squeeze_norm = nn.BatchNorm2d(squeeze) if squeeze_norm else None
        self.squeeze_activation = nn.ReLU(inplace=True)
        # A zero-width branch (pct3x3 of 0 or 1 in the design-space sweeps) is left out.
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, kernel_size=1) if expand1x1 else None
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, kernel_size=3, padding=1) if expand3x3 else None
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        s = self.squeeze_activation(self.squeeze_norm(s) if self.squeeze_norm is not None else s)
        branches = []
        if self.expand1x1 is not None:
            branches.append(self.expand1x1_activation(self.expand1x1(s)))
        if self.expand3x3 is not None:
            branches.append(self.expand3x3_activation(self.expand3x3(s)))
        return torch.cat(branches, 1) if len(branches) > 1 else branches[0]


class Bypass(nn.Module):
    """A Fire module with a residual bypass (paper section 6).

    simple: output = fire(x) + x (needs in == out channels);
    complex: output = fire(x) + conv1x1(x), for modules whose channels change.
    """

    def __init__(self, fire: Fire, kind: str) -> None:
        super().__init__()
        self.fire = fire
        self.kind = kind
        if kind == "simple":
            if fire.in_channels != fire.out_channels:
                raise ValueError("a simple bypass needs a Fire module with in == out channels")
            self.shortcut = nn.Identity()
        elif kind == "complex":
            self.shortcut = nn.Conv2d(fire.in_channels, fire.out_channels, kernel_size=1)
        else:
            raise ValueError(f"unknown bypass kind {kind!r}; use 'simple' or 'complex'")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fire(x) + self.shortcut(x)


BYPASS_KINDS = ("none", "simple", "complex")


def with_bypass(fire: Fire, bypass: str) -> nn.Module:
    """Paper section 6, for a whole network's `bypass` setting: 'simple' puts an identity bypass
    around every Fire whose channels are unchanged (fire3, 5, 7, 9 of v1.0); 'complex' adds
    1x1-conv bypasses around the others too; 'none' returns the Fire module itself."""
    if bypass not in BYPASS_KINDS:
        raise ValueError(f"unknown bypass {bypass!r}; use one of {BYPASS_KINDS}")
    if bypass == "none":
        return fire
    if fire.in_channels == fire.out_channels:
        return Bypass(fire, "simple")
    return Bypass(fire, "complex") if bypass == "complex" else fire

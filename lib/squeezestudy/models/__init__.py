"""Every model of the study, built by name: `build("squeezenet_fmnist")`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .alexnet import AlexNet, alexnet
from .fire import BYPASS_KINDS, Bypass, Fire, with_bypass
from .head import SqueezeNetBase, classifier_head
from .lenet import LeNet, lenet
from .squeezenet import (
    SqueezeNet,
    load_torchvision_weights,
    squeezenet1_0,
    squeezenet1_1,
    squeezenet_sketch,
)
from .squeezenet_design import SqueezeNetDesign, fire_sizes, squeezenet_design
from .squeezenet_fmnist import SqueezeNetFashionMNIST, squeezenet_fmnist


@dataclass(frozen=True)
class ModelSpec:
    builder: Callable[..., nn.Module]
    image_size: int  # the input side the model is meant for
    in_channels: int
    description: str


REGISTRY: dict[str, ModelSpec] = {
    "squeezenet_fmnist": ModelSpec(squeezenet_fmnist, 28, 1, "the note's one-Fire SqueezeNet"),
    "lenet": ModelSpec(lenet, 28, 1, "LeNet-5 without padding"),
    "alexnet": ModelSpec(alexnet, 112, 1, "d2l's one-channel AlexNet at 112x112"),
    "squeezenet1_0": ModelSpec(squeezenet1_0, 224, 3, "SqueezeNet v1.0 (paper, Table 1)"),
    "squeezenet1_1": ModelSpec(squeezenet1_1, 224, 3, "SqueezeNet v1.1"),
    "squeezenet_sketch": ModelSpec(squeezenet_sketch, 224, 3, "the note's Keras sketch of v1.0"),
    "squeezenet_design": ModelSpec(squeezenet_design, 28, 1,
                                   "SqueezeNet from the paper's metaparameters, sized for 28x28"),
}


class UnknownModelError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise UnknownModelError(f"unknown model {name!r}; known models: {known}") from None


def build(name: str, **kwargs) -> nn.Module:
    """Build a registered model; keyword arguments go to its builder."""
    builder = spec(name).builder
    try:
        return builder(**kwargs)
    except TypeError as err:
        raise TypeError(f"model {name!r}: {err}") from None


def register(name: str, model_spec: ModelSpec) -> None:
    REGISTRY[name] = model_spec


__all__ = [
    "REGISTRY", "ModelSpec", "UnknownModelError", "build", "spec", "register",
    "Fire", "Bypass", "SqueezeNet", "SqueezeNetFashionMNIST", "LeNet", "AlexNet",
    "squeezenet1_0", "squeezenet1_1", "squeezenet_sketch", "squeezenet_fmnist", "lenet", "alexnet",
    "load_torchvision_weights", "SqueezeNetDesign", "squeezenet_design", "fire_sizes",
    "SqueezeNetBase", "classifier_head", "with_bypass", "BYPASS_KINDS",
]  # fmt: skip

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
    """What the rest of the package needs to know about a model: adding one touches this file."""

    builder: Callable[..., nn.Module]
    image_size: int  # the input side the model is meant for
    in_channels: int
    description: str
    batch_size: int = 256  # the batch the benchmark trains it at
    # Micro-batch used on a CPU in fp32 (0: whole batches); in bf16 the batch is whole (half the
    # bytes). Training images/s, 2-core AVX2 (squeezestudy bench, 2026-11): one-Fire SqueezeNet at
    # batch 256: 4,136 whole, 6,366 as 2 x 128, 5,079 as 4 x 64; SqueezeNet v1.0 at 224x224, batch
    # 32: 14 whole, 18 as 2 x 16. LeNet and AlexNet-112 lose throughput at smaller batches. Since
    # the allocator setting (core.allocator, 2026-12-06) large batches no longer page-fault their
    # activations in every step: on an AVX2 machine's kernels the one-Fire SqueezeNet then ran
    # 1.04x (1.01-1.07) as fast in whole batches over six readings, and with its ReLU after the
    # pool (models.features) whole batches are its default (docs/speed.md, AVX2).
    cpu_micro_batch: int = 0
    # bf16 where the CPU runs it natively without an accuracy check: the 224x224 reference networks
    # the study benchmarks but never trains, and AlexNet-112, the first model bf16 was used for (a
    # checkpoint from before the choice was recorded resumes by this). On CUDA every model uses bf16.
    bf16_on_cpu: bool = False
    # bf16 runs whose mean difference from fp32 was within 0.3 points and not distinguishable from
    # zero in notebook 06's paired check (AlexNet-112: one pair; the headline network: one pair on
    # validation, headline2-bf16-s0 against headline-b96aug60-s0, +0.16 points): bf16 is their
    # default on a CPU with native bf16 (training.settings.static_choice), and a candidate of the
    # tuning pass.
    bf16_checked: bool = False
    sized_by_input: bool = False  # the builder takes image_size: its classifier depends on it
    # Its fp32 forward and backward on a CPU run the compiled kernels (squeezestudy.kernels) where
    # they are built: fp32 is then its CPU default, faster there than bf16 (docs/speed.md).
    cpu_kernels: bool = False


REGISTRY: dict[str, ModelSpec] = {
    "squeezenet_fmnist": ModelSpec(squeezenet_fmnist, 28, 1, "the note's one-Fire SqueezeNet",
                                   bf16_checked=True),
    "lenet": ModelSpec(lenet, 28, 1, "LeNet-5 without padding", bf16_checked=True, cpu_kernels=True),
    "alexnet": ModelSpec(alexnet, 112, 1, "d2l's one-channel AlexNet at 112x112", batch_size=128,
                         bf16_on_cpu=True, bf16_checked=True, sized_by_input=True),
    "squeezenet1_0": ModelSpec(squeezenet1_0, 224, 3, "SqueezeNet v1.0 (paper, Table 1)",
                               batch_size=32, cpu_micro_batch=16, bf16_on_cpu=True),
    "squeezenet1_1": ModelSpec(squeezenet1_1, 224, 3, "SqueezeNet v1.1", batch_size=32,
                               bf16_on_cpu=True),
    "squeezenet_sketch": ModelSpec(squeezenet_sketch, 224, 3, "the note's Keras sketch of v1.0",
                                   batch_size=32),
    "squeezenet_design": ModelSpec(squeezenet_design, 28, 1,
                                   "SqueezeNet from the paper's metaparameters, sized for 28x28",
                                   bf16_checked=True),
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

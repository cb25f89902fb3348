"""The training config: everything that defines a run, checked when it is made, and the model it builds."""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing
from dataclasses import dataclass, field

import torch
from torch import nn

from squeezestudy.core.device import (
    PRECISIONS,
)
from squeezestudy.data import fashion_mnist as fmnist
from squeezestudy.models import build, spec

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")
MAX_SEED = 2**32  # seeds are mixed with the epoch as seed * 100_003 + epoch
RESUME_HINT = "resume=True (command line: --resume; notebook 05 or the batch: run it again)"
FORCE_HINT = "force=True (command line: --force)"


def model_arguments(model: str) -> tuple[str, ...] | None:
    """The keyword arguments the builder of `model` accepts (following a builder's **kwargs into
    the class it returns); None when they cannot be known."""
    builder = spec(model).builder
    target = builder
    for _ in range(3):
        params = inspect.signature(target).parameters.values()
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        try:
            returned = typing.get_type_hints(target).get("return")
        except Exception:  # unresolvable annotations: accept anything
            return None
        if not inspect.isclass(returned):
            return None
        target = returned
    return None


_INT_FIELDS = ("epochs", "batch_size", "seed", "batch_size_eval")
_FLOAT_FIELDS = ("lr", "momentum", "weight_decay", "warmup_fraction", "label_smoothing")
_OPTIONAL_INT_FIELDS = ("image_size", "micro_batch", "train_subset")


def _type_problems(config: TrainConfig) -> list[str]:
    """Values of the wrong type (notebook parameters and JSON can carry strings)."""
    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    problems = [f"{name} must be an integer, got {getattr(config, name)!r}"
                for name in _INT_FIELDS if not is_int(getattr(config, name))]
    problems += [f"{name} must be an integer or None, got {getattr(config, name)!r}"
                 for name in _OPTIONAL_INT_FIELDS
                 if getattr(config, name) is not None and not is_int(getattr(config, name))]
    problems += [f"{name} must be a number, got {getattr(config, name)!r}" for name in _FLOAT_FIELDS
                 if isinstance(getattr(config, name), bool)
                 or not isinstance(getattr(config, name), (int, float))]
    problems += [f"{name} must be True or False, got {getattr(config, name)!r}"
                 for name in ("augment", "compile") if not isinstance(getattr(config, name), bool)]
    if config.channels_last is not None and not isinstance(config.channels_last, bool):
        problems.append(f"channels_last must be True, False or None, got {config.channels_last!r}")
    for name in ("model", "optimizer", "schedule", "device", "precision"):
        if not isinstance(getattr(config, name), str):
            problems.append(f"{name} must be a string, got {getattr(config, name)!r}")
    return problems


def _model_kwargs_problem(config: TrainConfig) -> str | None:
    kwargs = config.model_kwargs
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        return (f"model_kwargs must be a mapping of argument names to values (a JSON object such "
                f"as {{\"sr\": 0.25}}), got {kwargs!r}")
    accepted = model_arguments(config.model)
    unknown = sorted(set(kwargs) - set(accepted)) if accepted is not None else []
    if unknown:
        return (f"model_kwargs: {', '.join(map(repr, unknown))} not accepted by the builder of "
                f"{config.model!r}; it accepts: {', '.join(accepted)}")
    return None


def _device_problem(device: str) -> str | None:
    if device == "auto":
        return None
    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        return f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps"
    return None


def _option(default, help: str):
    """A TrainConfig field with its help text: the command line's flags are made from these."""
    if isinstance(default, dict):
        return field(default_factory=dict, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything that defines a training run (and nothing that does not change its result).
    The one source of run defaults: `squeezestudy train`'s flags are generated from these fields,
    and a test keeps notebook 05's parameters equal to them."""

    model: str = _option("squeezenet_fmnist", "a registered model (squeezestudy.models.REGISTRY)")
    model_kwargs: dict = _option({}, "keyword arguments of the model's builder")
    epochs: int = _option(30, "training epochs")
    batch_size: int = _option(256, "images per optimizer step")
    optimizer: str = _option("adamw", f"one of {', '.join(OPTIMIZERS)}")
    lr: float = _option(0.01, "peak learning rate")
    momentum: float = _option(0.9, "SGD's (Nesterov) momentum; unused by AdamW")
    weight_decay: float = _option(5e-4, "weight decay of the weights (never of biases)")
    schedule: str = _option("onecycle", f"learning-rate schedule: one of {', '.join(SCHEDULES)}")
    warmup_fraction: float = _option(0.2, "onecycle: share of the steps spent warming up")
    label_smoothing: float = _option(0.0, "label smoothing of the cross-entropy, in [0, 1)")
    augment: bool = _option(False, "random crops (zero padding) and horizontal flips of training images")
    erase: float = _option(0.0, "random erasing: the share of training images that lose one random "
                                "rectangle (2 to 25 percent of the image) to zeros; 0: off")
    ema: float = _option(0.0, "decay per step of an exponential moving average of the weights, "
                              "evaluated and kept as the final weights (e.g. 0.999); 0: off")
    sealed: bool = _option(False, "never evaluate the test split while training (a search run): "
                                  "`squeezestudy unseal` opens it once the recipe is frozen")
    image_size: int | None = _option(None, "input side in pixels (default: the model's own)")
    seed: int = _option(0, "seeds the weights, the batch order, dropout and augmentation")
    device: str = _option("auto", "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    precision: str = _option("auto", f"one of {', '.join(PRECISIONS)}; auto: bf16 where it pays")
    channels_last: bool | None = _option(None, "NHWC memory layout (default: on, except on MPS)")
    compile: bool = _option(False, "torch.compile the model")
    batch_size_eval: int = _option(1000, "images per evaluation batch")
    # The same update with cache-sized activations: gradients accumulated over micro-batches.
    micro_batch: int | None = _option(None, "split each batch into micro-batches of this size "
                                            "(default: the device's measured choice; 0: never)")
    train_subset: int | None = _option(None, "train on n images, the first n/10 of each class "
                                             "(tests, smoke runs)")

    def __post_init__(self) -> None:
        spec(self.model)  # unknown names fail here, listing the known ones
        problems = _type_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        subset_images = (self.train_subset // fmnist.NUM_CLASSES) * fmnist.NUM_CLASSES \
            if self.train_subset is not None else None
        checks = [
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}"),
            (self.batch_size_eval >= 1, f"batch_size_eval must be at least 1, got {self.batch_size_eval}"),
            (self.micro_batch is None or self.micro_batch >= 0,
             f"micro_batch must be >= 0 (0: off) or None (auto), got {self.micro_batch}"),
            (self.lr > 0 and math.isfinite(self.lr), f"lr must be a positive number, got {self.lr}"),
            (self.weight_decay >= 0 and math.isfinite(self.weight_decay),
             f"weight_decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (0 <= self.erase <= 1, f"erase must be in [0, 1], got {self.erase}"),
            (0 <= self.ema < 1, f"ema must be in [0, 1) (0: off), got {self.ema}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (0 < self.warmup_fraction < 1, f"warmup_fraction must be in (0, 1), got {self.warmup_fraction}"),
            (self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r}; use one of {OPTIMIZERS}"),
            (self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r}; use one of {SCHEDULES}"),
            (self.precision in PRECISIONS, f"unknown precision {self.precision!r}; use one of {PRECISIONS}"),
            (0 <= self.seed < MAX_SEED, f"seed must be in 0..{MAX_SEED - 1}, got {self.seed}"),
            (self.image_size is None or self.image_size >= 1,
             f"image_size must be >= 1, got {self.image_size}"),
            (self.train_subset is None or self.train_subset >= fmnist.NUM_CLASSES,
             f"train_subset must be at least {fmnist.NUM_CLASSES} (one image per class) or None "
             f"(all images), got {self.train_subset}"),
            (subset_images is None or subset_images < fmnist.NUM_CLASSES or subset_images >= self.batch_size,
             f"train_subset {self.train_subset} gives {subset_images} training images, fewer than "
             f"one batch of {self.batch_size}; raise train_subset or lower batch_size"),
        ]
        problems = [message for ok, message in checks if not ok]
        problems += [p for p in (_device_problem(self.device), _model_kwargs_problem(self)) if p]
        if problems:
            raise ValueError("; ".join(problems))

    def train_split(self, dataset: fmnist.FashionMNIST) -> fmnist.Split:
        """The training images this config trains on (all, or the train_subset)."""
        if self.train_subset and self.train_subset > len(dataset.train):
            raise ValueError(f"train_subset {self.train_subset:,} is more than the "
                             f"{len(dataset.train):,} training images; lower it or use None (all)")
        return dataset.train.subset(self.train_subset) if self.train_subset else dataset.train

    def resolved_image_size(self) -> int:
        return self.image_size or spec(self.model).image_size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def differences(self, stored: dict) -> list[str]:
        """Fields in which a config stored by a run differs from this one; fields added to
        TrainConfig since the run was made count at their defaults."""
        defaults = {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
                    for f in dataclasses.fields(self)}
        mine = self.to_dict()
        merged = {**defaults, **stored}
        return sorted(k for k in merged if k not in mine or merged[k] != mine[k])

    def same_as(self, stored: dict) -> bool:
        """Whether a config stored by a run equals this one (see `differences`)."""
        return not self.differences(stored)


def build_model(config: TrainConfig) -> nn.Module:
    kwargs = {"num_classes": fmnist.NUM_CLASSES, "in_channels": 1, **config.model_kwargs}
    if spec(config.model).sized_by_input:
        kwargs.setdefault("image_size", config.resolved_image_size())
    try:
        return build(config.model, **kwargs)
    except (TypeError, ValueError) as err:  # a value the builder refuses, e.g. {"sr": "big"}
        reason = str(err).removeprefix(f"model {config.model!r}: ")
        raise ValueError(f"model {config.model!r} cannot be built with model_kwargs "
                         f"{config.model_kwargs}: {reason}") from None


def has_batch_statistics(config: TrainConfig) -> bool:
    """Whether the model normalises with batch statistics (a BatchNorm layer): splitting a batch
    into micro-batches then changes the update, not only the speed. Built on the meta device: no
    memory, no initialisation cost."""
    with torch.device("meta"):
        model = build_model(config)
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())

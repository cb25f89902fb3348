"""Training: one `fit` for every model, with per-epoch checkpoints, resume and run records.

A run lives in `outputs/runs/<run-name>/`: `checkpoint.pt` (after every epoch),
`history.csv` (one row per epoch), then `predictions.npz` and `metrics.json` (the
summary, written last: the finished marker; see rundir.py). Every file is written
atomically. Randomness is seeded per epoch from (seed, epoch), so a resumed run ends
with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import platform
import sys
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import __version__, fileio, paths, rundir, tune
from . import data as fmnist
from .device import (
    PRECISIONS,
    autocast,
    device_label,
    device_name,
    pick_device,
    resolve_precision,
    synchronize,
)
from .evaluate import evaluate, predict
from .models import build, spec
from .rundir import CHECKPOINT, PREDICTIONS, ResultFileError, RunExistsError
from .summary import count_parameters, weight_bytes

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")
REPO_ROOT, RUNS_DIR = paths.REPO_ROOT, paths.RUNS_DIR  # also importable from here
MAX_SEED = 2**32  # seeds are mixed with the epoch as seed * 100_003 + epoch
RESUME_HINT = "resume=True (command line: --resume; notebook 05 or the batch: run it again)"
FORCE_HINT = "force=True (command line: --force)"

__all__ = ["TrainConfig", "RunResult", "fit", "fit_or_load", "load_run", "load_predictions",
           "load_trained_model", "ConfigMismatchError", "NonFiniteLossError", "TrainingInterrupted",
           "ResultFileError", "RunExistsError", "build_model", "model_arguments"]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class ConfigMismatchError(ValueError):
    """A checkpoint to resume from was written by a different config."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or a kernel interrupt) during `fit`; the message says what is saved."""

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of a traceback
        return [f"TrainingInterrupted: {self}"]


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


@dataclass
class RunResult:
    model: nn.Module
    history: pd.DataFrame
    metrics: dict
    out_dir: Path | None


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


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on biases: standard practice, and it keeps tiny models from underfitting.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=config.lr)


def lr_factor(step: int, total: int, schedule: str, warmup_fraction: float) -> float:
    """Multiplier of the peak learning rate at a given optimizer step."""
    if schedule == "constant":
        return 1.0
    progress = step / max(1, total)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    warm = warmup_fraction  # onecycle: linear warm-up from 0.04x, then cosine down to 0
    if progress < warm:
        return 0.04 + 0.96 * progress / warm
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warm) / (1 - warm))))


def versions() -> dict:
    import torchvision

    return {"squeezestudy": __version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "python": platform.python_version()}


def has_batch_statistics(config: TrainConfig) -> bool:
    """Whether the model normalises with batch statistics (a BatchNorm layer): splitting a batch
    into micro-batches then changes the update, not only the speed. Built on the meta device: no
    memory, no initialisation cost."""
    with torch.device("meta"):
        model = build_model(config)
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def resolve_defaults(config: TrainConfig, device: torch.device) -> tune.Choice:
    """The settings `fit` uses for `config` on `device`: those the config sets; for those left to
    auto, this machine's measured choice (`squeezestudy tune`), else the model's static defaults
    (ModelSpec; channels_last was faster for every model measured: CPU fp32 1.3-2x, CUDA bf16
    1.05-1.1x). micro_batch 0 means whole batches."""
    auto = (tune.lookup(config.model, config.batch_size, config.resolved_image_size(), device)
            or tune.static_choice(config.model, device))
    precision = auto.precision if config.precision == "auto" else resolve_precision(config.precision, device)
    channels_last = auto.channels_last if config.channels_last is None else config.channels_last
    micro_batch = auto.micro_batch if config.micro_batch is None else config.micro_batch
    if micro_batch and has_batch_statistics(config):
        if config.micro_batch:
            raise ValueError(f"micro_batch={config.micro_batch} with batch norm in the model: it would "
                             "normalise each micro-batch on its own statistics, a different update; "
                             "set micro_batch to 0 (or leave it to auto)")
        micro_batch = 0  # the tuned or static choice assumed a model without batch statistics
    return tune.Choice(precision, channels_last, micro_batch, auto.threads)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               device: torch.device, precision: str, label_smoothing: float = 0.0,
               micro_batch: int = 0) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """One optimizer step over the batch (in micro-batches of `micro_batch` images, gradients
    accumulated, if it is smaller than the batch); returns (mean loss, logits, finite), tensors
    detached. A non-finite loss skips the update, so the weights stay the last good ones."""
    chunks = -(-len(y) // micro_batch) if 0 < micro_batch < len(y) else 1
    optimizer.zero_grad(set_to_none=True)
    losses, all_logits = [], []
    for xc, yc in zip(x.chunk(chunks), y.chunk(chunks), strict=True):
        with autocast(device, precision):
            logits = model(xc)
        loss = F.cross_entropy(logits.float(), yc, label_smoothing=label_smoothing)
        losses.append(loss.detach() * len(yc))
        all_logits.append(logits.detach())
        if not torch.isfinite(loss):  # the one host sync per micro-batch
            return loss.detach(), torch.cat(all_logits), False
        (loss * (len(yc) / len(y)) if chunks > 1 else loss).backward()
    optimizer.step()
    return torch.stack(losses).sum() / len(y), torch.cat(all_logits), True


def _open_run_dir(out_path: Path, config: TrainConfig, resume: bool, force: bool,
                  device: torch.device) -> tuple[dict | None, tuple[str, ...]]:
    """Check the run directory before any work. Returns the checkpoint to resume from (if any)
    and the old files to delete once training starts (the finished marker first), so that an
    error found while loading the data leaves the directory as it was."""
    paths.ensure_writable_dir(out_path, "run directory")
    rundir.remove_stale_temporaries(out_path)
    ckpt_path = out_path / CHECKPOINT
    if resume and ckpt_path.is_file():
        state = rundir.read_checkpoint(ckpt_path, device, advice=(
            f"delete it to start the run over, or run without resume and with {FORCE_HINT}"))
        changed = config.differences(state["config"])
        if not changed:
            return state, rundir.RESULT_FILES  # rewritten when the resumed run finishes
        if not force:
            raise ConfigMismatchError(
                f"{ckpt_path} was written by a different config (differs in: {', '.join(changed)}); "
                f"use another out_dir, or {FORCE_HINT} to start over there")
    existing = rundir.describe_existing(out_path)
    if existing and not force:
        if existing == "a finished run":
            todo = (("it has no checkpoint to resume from; " if resume else "")
                    + f"pass {FORCE_HINT} to delete it and train again, or choose another output directory")
        else:
            todo = (f"continue it with {RESUME_HINT}, start it over with {FORCE_HINT}, "
                    "or choose another output directory")
        raise RunExistsError(f"{out_path} already holds {existing}; {todo}")
    return None, rundir.RUN_FILES


SAVING = "saving its checkpoint"


def _file_identity(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


@dataclass
class _Stage:
    """Where a run is, for the message when it is interrupted."""

    epoch: int
    phase: str
    saved: int  # epochs in the checkpoint on disk
    started: bool = False
    replacing: tuple | None = None  # identity of the checkpoint file a save is replacing
    changed_dir: bool = False  # the old run's files have been deleted

    def interrupted(self, out_path: Path | None, epochs: int) -> str:
        if self.phase == SAVING and _file_identity(out_path / CHECKPOINT) != self.replacing:
            self.saved = self.epoch + 1  # interrupted after the rename: the new checkpoint is there
        if self.epoch >= epochs:
            where = f"interrupted while {self.phase}"
        else:
            where = (f"interrupted {'in' if self.started else 'before'} epoch {self.epoch + 1} of "
                     f"{epochs} ({self.phase})")
        if out_path is None:
            return f"{where}; nothing is kept on disk (no out_dir was given)"
        if not self.changed_dir:
            return f"{where}; nothing in {out_path} was changed"
        if self.saved == 0:
            return f"{where}; no epoch was saved in {out_path} yet: run it again to start over"
        saved = "epoch 1 is" if self.saved == 1 else f"epochs 1-{self.saved} are"
        unfinished = " (the run is not finished)" if self.saved >= epochs else ""
        return f"{where}; {saved} saved in {out_path}{unfinished}, continue with {RESUME_HINT}"


def fit(
    config: TrainConfig,
    dataset: fmnist.FashionMNIST | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    quiet: bool = False,
    data_dir: str | Path | None = None,
    force: bool = False,
) -> RunResult:
    """Train `config.model` on Fashion-MNIST; evaluate on validation and test after each epoch.

    out_dir: where the checkpoint, history and metrics go (None: keep nothing on disk); checked
    before any work. resume: continue from out_dir's checkpoint (which must come from the same
    config). force: start over in an out_dir that already holds a run (finished or not);
    without it that is an error, so nothing is overwritten by mistake.
    """
    device = pick_device(config.device)
    out_path = Path(out_dir) if out_dir is not None else None
    state, old_files = _open_run_dir(out_path, config, resume, force, device) \
        if out_path is not None else (None, ())
    start_epoch = state["epoch"] if state else 0
    stage = _Stage(start_epoch, "building the model", saved=start_epoch)
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    threads = torch.get_num_threads()
    choice = resolve_defaults(config, device)
    try:
        torch.set_num_threads(choice.threads)  # a tuned machine's choice
        run = _prepare(config, device, choice, dataset, data_dir, stage)
        history = _restore(run, state, out_path / CHECKPOINT) if state is not None else []
        if out_path is not None:  # from here the directory holds a run in progress
            rundir.remove(out_path, old_files)
            stage.changed_dir = True
        log(run.describe(start_epoch))
        for epoch in range(start_epoch, config.epochs):
            history.append(_run_epoch(run, epoch, stage, quiet))
            log(_epoch_line(history[-1], config.epochs))
            if out_path is not None:
                _save_checkpoint(run, history, out_path, stage)
        stage.epoch, stage.phase = config.epochs, "writing the results (predictions, metrics)"
        return _finish(run, history, out_path)
    except KeyboardInterrupt:
        raise TrainingInterrupted(stage.interrupted(out_path, config.epochs)) from None
    finally:
        torch.set_num_threads(threads)


@dataclass
class _Training:
    """A run being trained: what every epoch needs."""

    config: TrainConfig
    device: torch.device
    precision: str
    channels_last: bool
    micro_batch: int  # 0: whole batches
    image_size: int
    model: nn.Module
    step_model: nn.Module  # the model, or its torch.compile'd version
    params: int
    train_images: int
    train_batches: fmnist.Batches
    val_batches: fmnist.Batches
    test_batches: fmnist.Batches
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    ema_model: nn.Module | None = None  # the moving average of the weights (config.ema > 0)

    @property
    def eval_model(self) -> nn.Module:
        """What is evaluated and kept: the moving average where there is one."""
        return self.ema_model.module if self.ema_model is not None else self.model

    def describe(self, start_epoch: int) -> str:
        return (f"{self.config.model}: {self.params:,} parameters, {device_label(self.device)}, "
                f"{self.precision}, channels_last={self.channels_last}, "
                f"micro_batch={self.micro_batch or 'off'}, {self.train_images:,} training images at "
                f"{self.image_size}x{self.image_size}"
                + (f", resuming after epoch {start_epoch}" if start_epoch else ""))


def _prepare(config: TrainConfig, device: torch.device, choice: tune.Choice,
             dataset: fmnist.FashionMNIST | None, data_dir, stage: _Stage) -> _Training:
    """Model, data batches, optimizer and schedule. The model first: a model_kwargs value its
    builder refuses fails before the data is loaded."""
    precision, channels_last, micro_batch = choice.precision, choice.channels_last, choice.micro_batch
    image_size = config.resolved_image_size()
    torch.manual_seed(config.seed)
    model = build_model(config).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if dataset is None:
        stage.phase = "loading data"
        dataset = fmnist.load(data_dir)
    stage.phase = "setting up"
    train_split = config.train_split(dataset)
    mean, std = dataset.mean_std()

    def batches(split, batch_size, train):
        return fmnist.Batches(split, batch_size, mean=mean, std=std, device=device,
                              image_size=image_size, shuffle=train, drop_last=train,
                              augment=train and config.augment, erase=config.erase if train else 0.0,
                              channels_last=channels_last)

    train_batches = batches(train_split, config.batch_size, True)
    if len(train_batches) == 0:
        raise ValueError(f"batch_size {config.batch_size} is larger than the {len(train_split)} "
                         "training images; lower it")
    optimizer = make_optimizer(model, config)
    total_steps = config.epochs * len(train_batches)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, config.schedule, config.warmup_fraction))
    ema_model = None
    if config.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema_model = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)
    return _Training(config, device, precision, channels_last, micro_batch, image_size, model,
                     torch.compile(model) if config.compile else model, count_parameters(model),
                     len(train_split), train_batches, batches(dataset.val, config.batch_size_eval, False),
                     batches(dataset.test, config.batch_size_eval, False), optimizer, scheduler,
                     ema_model)


def _restore(run: _Training, state: dict, path: Path) -> list[dict]:
    """Load a checkpoint into the run; returns its history."""
    try:
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        if run.ema_model is not None:
            run.ema_model.load_state_dict(state["ema"])
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        first_line = str(err).strip().splitlines()[0]
        raise ResultFileError(f"{path}: its weights do not fit the model ({first_line}), corrupt; "
                              f"delete it to start the run over, or run without resume and with "
                              f"{FORCE_HINT}") from None
    return state["history"]


def _run_epoch(run: _Training, epoch: int, stage: _Stage, quiet: bool) -> dict:
    """Train one epoch, then evaluate on validation and test: the epoch's history row."""
    stage.epoch, stage.phase, stage.started = epoch, "training", True
    train_loss, train_acc, seen, train_s = _train_epoch(run, epoch, quiet)
    stage.phase = "evaluation"
    t0 = time.perf_counter()
    val_loss, val_acc = evaluate(run.eval_model, run.val_batches, run.precision)
    row = {"epoch": epoch + 1, "lr": run.optimizer.param_groups[0]["lr"],
           "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss, "val_acc": val_acc}
    if not run.config.sealed:  # a sealed run never looks at the test split
        row["test_loss"], row["test_acc"] = evaluate(run.eval_model, run.test_batches, run.precision)
    return {**row, "train_s": train_s, "eval_s": time.perf_counter() - t0, "images_per_s": seen / train_s}


def _train_epoch(run: _Training, epoch: int, quiet: bool) -> tuple[float, float, int, float]:
    """One pass over the training batches: (mean loss, accuracy, images, seconds). Randomness is
    seeded from (seed, epoch), so a resumed run continues exactly."""
    config, device = run.config, run.device
    torch.manual_seed(config.seed * 100_003 + epoch)  # dropout
    run.train_batches.set_seed(config.seed * 100_003 + epoch)  # order and augmentation
    run.model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    synchronize(device)
    t0 = time.perf_counter()
    progress = None if quiet else _progress_bar(len(run.train_batches), epoch, config.epochs)
    try:
        for step, (x, y) in enumerate(run.train_batches):
            lr_now = run.scheduler.get_last_lr()[0]
            loss, logits, finite = train_step(run.step_model, run.optimizer, x, y, device,
                                              run.precision, config.label_smoothing, run.micro_batch)
            if not finite:
                raise NonFiniteLossError(
                    f"loss is {loss.item()} at epoch {epoch + 1}, step {step + 1} (lr {lr_now:.3g}); "
                    f"the checkpoint of epoch {epoch} is kept. Lower the learning rate or use "
                    "precision='fp32'.")
            run.scheduler.step()
            if run.ema_model is not None:
                run.ema_model.update_parameters(run.model)
            loss_sum += loss * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            if progress is not None:
                progress.update()
    finally:
        if progress is not None:
            progress.close()
    synchronize(device)
    return loss_sum.item() / seen, correct.item() / seen, seen, time.perf_counter() - t0


def _progress_bar(steps: int, epoch: int, epochs: int):
    from tqdm.auto import tqdm  # a widget in Jupyter, text elsewhere

    return tqdm(total=steps, desc=f"epoch {epoch + 1}/{epochs}", leave=False, mininterval=1.0,
                file=sys.stdout)


def _epoch_line(row: dict, epochs: int) -> str:
    test = f"test {row['test_acc']:.4f}" if "test_acc" in row else "test sealed"
    return (f"epoch {row['epoch']:3d}/{epochs}  loss {row['train_loss']:.4f}  "
            f"train {row['train_acc']:.4f}  val {row['val_acc']:.4f}  {test}  "
            f"{row['train_s']:.1f}s  {row['images_per_s']:,.0f} img/s")


def _save_checkpoint(run: _Training, history: list[dict], out_path: Path, stage: _Stage) -> None:
    """Checkpoint and history after an epoch; atomic: the previous checkpoint stays until the rename."""
    stage.phase = SAVING
    stage.replacing = _file_identity(out_path / CHECKPOINT)
    epochs_done = history[-1]["epoch"]
    fileio.torch_save({"config": run.config.to_dict(), "epoch": epochs_done, "history": history,
                       "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
                       "scheduler": run.scheduler.state_dict(),
                       **({"ema": run.ema_model.state_dict()} if run.ema_model is not None else {})},
                      out_path / CHECKPOINT)
    stage.saved = epochs_done
    fileio.write_text(out_path / rundir.HISTORY, pd.DataFrame(history).to_csv(index=False))


def _finish(run: _Training, history: list[dict], out_path: Path | None) -> RunResult:
    """The run's summary (metrics), and on disk its predictions and metrics.json, written last."""
    config, frame, last = run.config, pd.DataFrame(history), history[-1]
    metrics = {
        "model": config.model, "params": run.params, "epochs": config.epochs, "seed": config.seed,
        "precision": run.precision, "device": str(run.device), "device_name": device_name(run.device),
        "channels_last": run.channels_last, "micro_batch": run.micro_batch,
        "image_size": run.image_size, "train_images": run.train_images,
        "normalisation": {"mean": run.train_batches.mean, "std": run.train_batches.std},
        "test_acc": last.get("test_acc"), "val_acc": last["val_acc"], "train_acc": last["train_acc"],
        "test_loss": last.get("test_loss"), "val_loss": last["val_loss"], "sealed": config.sealed,
        "train_time_s": float(frame["train_s"].sum()),
        "images_per_s": float(frame["images_per_s"].median()),
        "versions": versions(), "config": config.to_dict(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if out_path is not None:
        predictions = None if config.sealed else predictions_npz(run.eval_model, run.test_batches,
                                                                 run.precision)
        metrics = rundir.write_finished(out_path, frame.to_csv(index=False), predictions, metrics)
    return RunResult(run.eval_model, frame, metrics, out_path)


def predictions_npz(model: nn.Module, batches: fmnist.Batches, precision: str) -> bytes:
    """Test-set predictions and their confidence as an .npz file's bytes: confusion matrices and
    mistakes can be drawn later without the (possibly large, uncommitted) checkpoint."""
    probs = predict(model, batches, precision).softmax(1)
    confidence, pred = probs.max(1)
    return rundir.predictions_npz(pred.numpy(), confidence.numpy())


def save_predictions(model: nn.Module, batches: fmnist.Batches, precision: str, path: Path) -> None:
    fileio.write_bytes(path, predictions_npz(model, batches, precision))


def load_predictions(run_dir: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted class, confidence) for each of the 10,000 test images of a finished run."""
    pred, confidence = rundir.read_predictions(Path(run_dir) / PREDICTIONS)
    return torch.from_numpy(pred), torch.from_numpy(confidence)


def load_run(run_dir: str | Path) -> tuple[dict, pd.DataFrame]:
    """(metrics, history) of a finished run, its files checked against each other."""
    return rundir.read_finished(run_dir)


def load_trained_model(run_dir: str | Path, device: str = "cpu") -> tuple[nn.Module, TrainConfig]:
    """The model of a run's last checkpoint (its moving average of the weights, if it kept one), in
    eval mode."""
    path = Path(run_dir) / CHECKPOINT
    state = rundir.read_checkpoint(path, device)
    try:
        config = TrainConfig(**state["config"])
    except (TypeError, ValueError, KeyError) as err:
        raise ResultFileError(f"{path}: its config cannot be used ({err}); {rundir.RETRAIN}") from None
    model = build_model(config)
    weights = state["model"]
    if "ema" in state:  # the moving average is what the run evaluated and keeps
        weights = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise ResultFileError(f"{path}: its weights do not fit a {config.model} "
                              f"({str(err).strip().splitlines()[0]}); {rundir.RETRAIN}") from None
    return model.eval(), config


def fit_or_load(config: TrainConfig, out_dir: str | Path, force: bool = False, quiet: bool = False,
                data_dir: str | Path | None = None,
                dataset: fmnist.FashionMNIST | None = None) -> tuple[dict, pd.DataFrame]:
    """A finished run with the same config is read back, not retrained (unless `force`).
    An interrupted one resumes from its last checkpoint; a finished run of another config is
    an error (force=True replaces it)."""
    out_dir = Path(out_dir)
    metrics_file = out_dir / rundir.METRICS
    if not force and metrics_file.is_file():
        metrics = rundir.read_metrics(metrics_file)
        problem = rundir.inconsistency(out_dir, metrics)
        changed = config.differences(metrics["config"])
        if problem is None and not changed:
            if not quiet:
                print(f"{out_dir.name}: finished run found, loaded (force=True retrains)")
            return metrics, rundir.read_history(out_dir / rundir.HISTORY)
        if problem is None:
            raise RunExistsError(
                f"{out_dir} holds a finished run of another config (differs in: {', '.join(changed)}); "
                f"choose another run name or output directory, or pass {FORCE_HINT} to replace it")
        if not quiet:
            print(f"{out_dir.name}: not read back as finished, its files do not match "
                  f"{rundir.METRICS} ({problem})")
    paths.ensure_writable_dir(out_dir, "run directory")  # before the data is loaded
    if dataset is None:
        dataset = fmnist.load(data_dir)
    try:  # fit reads the checkpoint once and refuses it if another config wrote it
        result = fit(config, dataset, out_dir=out_dir, resume=not force, force=force, quiet=quiet)
    except ConfigMismatchError:  # an interrupted run of another config: nothing finished is lost
        result = fit(config, dataset, out_dir=out_dir, resume=False, force=True, quiet=quiet)
    _export_weights(out_dir, result.metrics, quiet)
    return result.metrics, result.history


EXPORT_MAX_BYTES = 8 * 2**20  # final weights up to this size are kept for readers (not AlexNet's)


def keeps_weights(params: int) -> bool:
    """Whether a run's final weights (fp32) are small enough to commit."""
    return weight_bytes(params) <= EXPORT_MAX_BYTES


def _export_weights(out_dir: Path, metrics: dict, quiet: bool) -> None:
    """A study run (under outputs/runs) small enough to commit gets its final weights in
    outputs/weights/<run>.pt, so that a reader can load it without training (weights.load_model)."""
    if out_dir.resolve().parent != RUNS_DIR.resolve() or not keeps_weights(metrics["params"]):
        return
    from . import weights

    written = weights.export(out_dir.name, runs_dir=out_dir.parent, weights_dir=paths.WEIGHTS_DIR)
    if not quiet:
        print(f"final weights: {paths.display_path(written)}")

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

from . import __version__, fileio, paths, rundir
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
from .summary import count_parameters

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")
REPO_ROOT = paths.REPO_ROOT
RUNS_DIR = REPO_ROOT / "outputs" / "runs"
MAX_SEED = 2**32  # seeds are mixed with the epoch as seed * 100_003 + epoch
RESUME_HINT = "resume=True (command line: --resume)"
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


@dataclass
class TrainConfig:
    """Everything that defines a training run (and nothing that does not change its result)."""

    model: str = "squeezenet_fmnist"
    model_kwargs: dict = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 256
    optimizer: str = "adamw"
    lr: float = 3e-3
    momentum: float = 0.9  # SGD only
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    warmup_fraction: float = 0.2  # onecycle: share of steps spent warming up
    label_smoothing: float = 0.0
    augment: bool = False
    image_size: int | None = None  # None: the model's own input size
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool | None = None  # None: on, except on MPS
    compile: bool = False
    batch_size_eval: int = 1000
    # Split each batch into micro-batches of this size, gradients accumulated: the same update
    # with cache-sized activations. None: the device's measured default (see resolve_defaults);
    # 0: never split.
    micro_batch: int | None = None
    train_subset: int | None = None  # train on n images, the first n/10 of each class (tests, smoke)

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
    if config.model == "alexnet":
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


# Micro-batch sizes measured faster on CPU than the whole batch (training images/s, 2-core AVX2):
# one-Fire SqueezeNet at batch 256: 4,136 whole, 6,366 as 2 x 128, 5,079 as 4 x 64.
# SqueezeNet v1.0 at 224x224, batch 32: 14 whole, 18 as 2 x 16 (squeezestudy bench).
# LeNet and AlexNet-112 lose throughput at smaller batches, so they are not split.
CPU_MICRO_BATCH = {"squeezenet_fmnist": 128, "squeezenet1_0": 16}


def resolve_defaults(config: TrainConfig, device: torch.device) -> tuple[str, bool, int]:
    """(precision, channels_last, micro_batch) that `fit` uses for `config` on `device`;
    micro_batch 0 means whole batches."""
    # bf16 autocast: on CUDA, and on CPUs with native bf16 for the models with big matmuls
    # (the tiny ones are bound by memory and overhead there).
    prefer_bf16 = device.type == "cuda" or config.model in ("alexnet", "squeezenet1_0", "squeezenet1_1")
    precision = resolve_precision(config.precision, device, prefer_bf16=prefer_bf16)
    # channels_last measured faster for every model (CPU fp32: 1.3-2x; CUDA bf16: 1.05-1.1x).
    channels_last = config.channels_last if config.channels_last is not None else device.type != "mps"
    micro_batch = config.micro_batch
    if micro_batch is None:
        micro_batch = CPU_MICRO_BATCH.get(config.model, 0) if device.type == "cpu" else 0
    return precision, channels_last, micro_batch


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
    image_size = config.resolved_image_size()
    precision, channels_last, micro_batch = resolve_defaults(config, device)
    out_path = Path(out_dir) if out_dir is not None else None
    state, old_files = _open_run_dir(out_path, config, resume, force, device) \
        if out_path is not None else (None, ())
    start_epoch = state["epoch"] if state else 0
    stage = _Stage(start_epoch, "building the model", saved=start_epoch)
    try:
        return _fit(config, dataset, data_dir, out_path, state, old_files, device, image_size,
                    precision, channels_last, micro_batch, quiet, stage)
    except KeyboardInterrupt:
        raise TrainingInterrupted(stage.interrupted(out_path, config.epochs)) from None


def _restore(state: dict, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, path: Path) -> None:
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        first_line = str(err).strip().splitlines()[0]
        raise ResultFileError(f"{path}: its weights do not fit the model ({first_line}), corrupt; "
                              f"delete it to start the run over, or run without resume and with "
                              f"{FORCE_HINT}") from None


def _fit(config: TrainConfig, dataset: fmnist.FashionMNIST | None, data_dir, out_path: Path | None,
         state: dict | None, old_files: tuple[str, ...], device: torch.device, image_size: int,
         precision: str, channels_last: bool, micro_batch: int, quiet: bool, stage: _Stage) -> RunResult:
    # The model first: a model_kwargs value its builder refuses fails before the data is loaded.
    torch.manual_seed(config.seed)
    model = build_model(config).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = count_parameters(model)
    if dataset is None:
        stage.phase = "loading data"
        dataset = fmnist.load(data_dir)
    stage.phase = "setting up"
    train_split = config.train_split(dataset)
    mean, std = dataset.mean_std()

    def batches(split, batch_size, train):
        return fmnist.Batches(split, batch_size, mean=mean, std=std, device=device,
                              image_size=image_size, shuffle=train, drop_last=train,
                              augment=train and config.augment, channels_last=channels_last)

    train_batches = batches(train_split, config.batch_size, True)
    if len(train_batches) == 0:
        raise ValueError(f"batch_size {config.batch_size} is larger than the {len(train_split)} "
                         "training images; lower it")
    val_batches = batches(dataset.val, config.batch_size_eval, False)
    test_batches = batches(dataset.test, config.batch_size_eval, False)

    optimizer = make_optimizer(model, config)
    total_steps = config.epochs * len(train_batches)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, config.schedule, config.warmup_fraction))

    history: list[dict] = []
    start_epoch = 0
    if state is not None:
        _restore(state, model, optimizer, scheduler, out_path / CHECKPOINT)
        history = state["history"]
        start_epoch = state["epoch"]

    if out_path is not None:  # from here the directory holds a run in progress
        rundir.remove(out_path, old_files)
        stage.changed_dir = True
    step_model = torch.compile(model) if config.compile else model
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    log(f"{config.model}: {params:,} parameters, {device_label(device)}, {precision}, "
        f"channels_last={channels_last}, micro_batch={micro_batch or 'off'}, "
        f"{len(train_split):,} training images at {image_size}x{image_size}"
        + (f", resuming after epoch {start_epoch}" if start_epoch else ""))

    for epoch in range(start_epoch, config.epochs):
        stage.epoch, stage.phase, stage.started = epoch, "training", True
        torch.manual_seed(config.seed * 100_003 + epoch)  # dropout
        train_batches.set_seed(config.seed * 100_003 + epoch)  # order and augmentation
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        synchronize(device)
        t0 = time.perf_counter()
        progress = None
        if not quiet:
            from tqdm.auto import tqdm

            progress = tqdm(total=len(train_batches), desc=f"epoch {epoch + 1}/{config.epochs}",
                            leave=False, mininterval=1.0, file=sys.stdout)
        try:
            for step, (x, y) in enumerate(train_batches):
                lr_now = scheduler.get_last_lr()[0]
                loss, logits, finite = train_step(step_model, optimizer, x, y, device, precision,
                                                  config.label_smoothing, micro_batch)
                if not finite:
                    raise NonFiniteLossError(
                        f"loss is {loss.item()} at epoch {epoch + 1}, step {step + 1} "
                        f"(lr {lr_now:.3g}); the checkpoint of epoch {epoch} "
                        "is kept. Lower the learning rate or use precision='fp32'.")
                scheduler.step()
                loss_sum += loss * len(y)
                correct += (logits.argmax(1) == y).sum()
                seen += len(y)
                if progress is not None:
                    progress.update()
        finally:
            if progress is not None:
                progress.close()
        synchronize(device)
        train_s = time.perf_counter() - t0
        stage.phase = "evaluation"
        t1 = time.perf_counter()
        val_loss, val_acc = evaluate(model, val_batches, precision)
        test_loss, test_acc = evaluate(model, test_batches, precision)
        eval_s = time.perf_counter() - t1
        row = {
            "epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
            "train_loss": loss_sum.item() / seen, "train_acc": correct.item() / seen,
            "val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc,
            "train_s": train_s, "eval_s": eval_s, "images_per_s": seen / train_s,
        }
        history.append(row)
        log(f"epoch {epoch + 1:3d}/{config.epochs}  loss {row['train_loss']:.4f}  "
            f"train {row['train_acc']:.4f}  val {val_acc:.4f}  test {test_acc:.4f}  "
            f"{train_s:.1f}s  {row['images_per_s']:,.0f} img/s")
        if out_path is not None:
            stage.phase = SAVING  # atomic: the previous checkpoint stays until the rename
            stage.replacing = _file_identity(out_path / CHECKPOINT)
            fileio.torch_save({"config": config.to_dict(), "epoch": epoch + 1, "history": history,
                               "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "scheduler": scheduler.state_dict()}, out_path / CHECKPOINT)
            stage.saved = epoch + 1
            fileio.write_text(out_path / rundir.HISTORY, pd.DataFrame(history).to_csv(index=False))

    stage.epoch, stage.phase = config.epochs, "writing the results (predictions, metrics)"
    frame = pd.DataFrame(history)
    last = history[-1]
    metrics = {
        "model": config.model, "params": params, "epochs": config.epochs, "seed": config.seed,
        "precision": precision, "device": str(device), "device_name": device_name(device),
        "channels_last": channels_last, "micro_batch": micro_batch, "image_size": image_size,
        "train_images": len(train_split),
        "test_acc": last["test_acc"], "val_acc": last["val_acc"], "train_acc": last["train_acc"],
        "test_loss": last["test_loss"], "val_loss": last["val_loss"],
        "train_time_s": float(frame["train_s"].sum()),
        "images_per_s": float(frame["images_per_s"].median()),
        "versions": versions(), "config": config.to_dict(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if out_path is not None:
        metrics = rundir.write_finished(out_path, frame.to_csv(index=False),
                                        predictions_npz(model, test_batches, precision), metrics)
    return RunResult(model, frame, metrics, out_path)


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
    """The model of a run's last checkpoint, in eval mode."""
    path = Path(run_dir) / CHECKPOINT
    state = rundir.read_checkpoint(path, device)
    try:
        config = TrainConfig(**state["config"])
    except (TypeError, ValueError, KeyError) as err:
        raise ResultFileError(f"{path}: its config cannot be used ({err}); {rundir.RETRAIN}") from None
    model = build_model(config)
    try:
        model.load_state_dict(state["model"])
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
    return result.metrics, result.history

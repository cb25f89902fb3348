"""Training: one `fit` for every model, with per-epoch checkpoints, resume and run records.

A run lives in `outputs/runs/<run-name>/`: `checkpoint.pt` (after every epoch),
`history.csv` (one row per epoch) and `metrics.json` (the summary), the last
two written atomically. Randomness is seeded per epoch from (seed, epoch), so a
resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import __version__, fileio
from . import data as fmnist
from .device import autocast, device_name, pick_device, resolve_precision, synchronize
from .evaluate import evaluate, predict
from .models import build, spec
from .summary import count_parameters

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")
CHECKPOINT = "checkpoint.pt"
PREDICTIONS = "predictions.npz"
REPO_ROOT = Path(__file__).resolve().parents[2]
RUNS_DIR = REPO_ROOT / "outputs" / "runs"


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class ConfigMismatchError(ValueError):
    """A checkpoint to resume from was written by a different config."""


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
        checks = [
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}"),
            (self.micro_batch is None or self.micro_batch >= 0,
             f"micro_batch must be >= 0 (0: off) or None (auto), got {self.micro_batch}"),
            (self.lr > 0 and math.isfinite(self.lr), f"lr must be a positive number, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (0 < self.warmup_fraction < 1, f"warmup_fraction must be in (0, 1), got {self.warmup_fraction}"),
            (self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r}; use one of {OPTIMIZERS}"),
            (self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r}; use one of {SCHEDULES}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def train_split(self, dataset: fmnist.FashionMNIST) -> fmnist.Split:
        """The training images this config trains on (all, or the train_subset)."""
        return dataset.train.subset(self.train_subset) if self.train_subset else dataset.train

    def resolved_image_size(self) -> int:
        return self.image_size or spec(self.model).image_size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def same_as(self, stored: dict) -> bool:
        """Whether a config stored by a run equals this one; fields added to TrainConfig since
        the run was made count at their defaults."""
        return TrainConfig(**stored).to_dict() == self.to_dict()


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
    return build(config.model, **kwargs)


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


def fit(
    config: TrainConfig,
    dataset: fmnist.FashionMNIST | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    quiet: bool = False,
    data_dir: str | Path | None = None,
) -> RunResult:
    """Train `config.model` on Fashion-MNIST; evaluate on validation and test after each epoch.

    out_dir: where the checkpoint, history and metrics go (None: keep nothing on disk).
    resume: continue from out_dir's checkpoint (which must come from the same config).
    """
    device = pick_device(config.device)
    image_size = config.resolved_image_size()
    precision, channels_last, micro_batch = resolve_defaults(config, device)
    if dataset is None:
        dataset = fmnist.load(data_dir)
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

    torch.manual_seed(config.seed)
    model = build_model(config).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = count_parameters(model)
    optimizer = make_optimizer(model, config)
    total_steps = config.epochs * len(train_batches)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, config.schedule, config.warmup_fraction))

    out_path = Path(out_dir) if out_dir is not None else None
    history: list[dict] = []
    start_epoch = 0
    if out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)
        ckpt_path = out_path / CHECKPOINT
        if resume and ckpt_path.is_file():
            state = torch.load(ckpt_path, map_location=device, weights_only=False)
            if not config.same_as(state["config"]):
                stored, mine = TrainConfig(**state["config"]).to_dict(), config.to_dict()
                changed = sorted(k for k in stored if stored[k] != mine[k])
                raise ConfigMismatchError(f"{ckpt_path} was written by a different config (differs in: "
                                 f"{', '.join(changed)}); use another out_dir or resume=False")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            history = state["history"]
            start_epoch = state["epoch"]
        elif not resume and ckpt_path.is_file():
            ckpt_path.unlink()  # a fresh run must not be resumed later from a stale checkpoint

    step_model = torch.compile(model) if config.compile else model
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    log(f"{config.model}: {params:,} parameters, {device} ({device_name(device)}), {precision}, "
        f"channels_last={channels_last}, micro_batch={micro_batch or 'off'}, "
        f"{len(train_split):,} training images at {image_size}x{image_size}"
        + (f", resuming after epoch {start_epoch}" if start_epoch else ""))

    for epoch in range(start_epoch, config.epochs):
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
        except KeyboardInterrupt:
            print(f"\ninterrupted in epoch {epoch + 1}; "
                  + (f"epochs 1-{epoch} are saved in {out_path}, continue with resume=True"
                     if out_path is not None and epoch else "nothing was saved"), file=sys.stderr)
            raise
        finally:
            if progress is not None:
                progress.close()
        synchronize(device)
        train_s = time.perf_counter() - t0
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
            fileio.torch_save({"config": config.to_dict(), "epoch": epoch + 1, "history": history,
                          "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict()}, out_path / CHECKPOINT)
            fileio.write_text(out_path / "history.csv", pd.DataFrame(history).to_csv(index=False))

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
        save_predictions(model, test_batches, precision, out_path / PREDICTIONS)
        fileio.write_text(out_path / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return RunResult(model, frame, metrics, out_path)


def save_predictions(model: nn.Module, batches: fmnist.Batches, precision: str, path: Path) -> None:
    """Test-set predictions and their confidence: confusion matrices and mistakes
    can be drawn later without the (possibly large, uncommitted) checkpoint."""
    probs = predict(model, batches, precision).softmax(1)
    confidence, pred = probs.max(1)
    fileio.write_with(path, lambda f: np.savez_compressed(
        f, pred=pred.numpy().astype(np.uint8), confidence=confidence.numpy().astype(np.float16)))


def load_predictions(run_dir: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted class, confidence) for each of the 10,000 test images of a finished run."""
    with np.load(Path(run_dir) / PREDICTIONS) as f:
        pred, confidence = f["pred"].astype(np.int64), f["confidence"].astype(np.float32)
    return torch.from_numpy(pred), torch.from_numpy(confidence)


def load_run(run_dir: str | Path) -> tuple[dict, pd.DataFrame]:
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return metrics, pd.read_csv(run_dir / "history.csv")


def load_trained_model(run_dir: str | Path, device: str = "cpu") -> tuple[nn.Module, TrainConfig]:
    """The model of a run's last checkpoint, in eval mode."""
    state = torch.load(Path(run_dir) / CHECKPOINT, map_location=device, weights_only=False)
    config = TrainConfig(**state["config"])
    model = build_model(config)
    model.load_state_dict(state["model"])
    return model.eval(), config


def fit_or_load(config: TrainConfig, out_dir: str | Path, force: bool = False, quiet: bool = False,
                data_dir: str | Path | None = None,
                dataset: fmnist.FashionMNIST | None = None) -> tuple[dict, pd.DataFrame]:
    """A finished run with the same config is read back, not retrained (unless `force`).
    An interrupted one resumes from its last checkpoint."""
    out_dir = Path(out_dir)
    metrics_file = out_dir / "metrics.json"
    if not force and metrics_file.is_file():
        metrics, history = load_run(out_dir)
        if config.same_as(metrics["config"]):
            if not quiet:
                print(f"{out_dir.name}: finished run found, loaded (force=True retrains)")
            return metrics, history
    if dataset is None:
        dataset = fmnist.load(data_dir)
    try:  # fit reads the checkpoint once and refuses it if another config wrote it
        result = fit(config, dataset, out_dir=out_dir, resume=not force, quiet=quiet)
    except ConfigMismatchError:
        result = fit(config, dataset, out_dir=out_dir, resume=False, quiet=quiet)
    return result.metrics, result.history

"""Training: one `fit` for every model, with per-epoch checkpoints, resume and run records.

A run lives in `outputs/runs/<run-name>/`: `checkpoint.pt` (after every epoch),
`history.csv` (one row per epoch), then `predictions.npz` and `metrics.json` (the
summary, written last: the finished marker; see rundir.py). Every file is written
atomically. Randomness is seeded per epoch from (seed, epoch), so a resumed run ends
with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from squeezestudy import __version__
from squeezestudy.core import allocator, fileio, lock, paths
from squeezestudy.core.device import (
    device_label,
    device_name,
    pick_device,
    synchronize,
)
from squeezestudy.data import fashion_mnist as fmnist
from squeezestudy.models.summary import count_parameters
from squeezestudy.training import rundir
from squeezestudy.training.config import FORCE_HINT, RESUME_HINT, TrainConfig, build_model
from squeezestudy.training.evaluate import evaluate, predict
from squeezestudy.training.rundir import CHECKPOINT, ResultFileError, RunExistsError
from squeezestudy.training.settings import Choice, resolve_defaults, resumed_choice
from squeezestudy.training.stage import SAVING, Stage, TrainingInterrupted, file_identity
from squeezestudy.training.step import lr_factor, make_optimizer, train_step


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class ConfigMismatchError(ValueError):
    """A checkpoint to resume from was written by a different config."""


@dataclass
class RunResult:
    model: nn.Module
    history: pd.DataFrame
    metrics: dict
    out_dir: Path | None


def versions() -> dict:
    import torchvision

    return {"squeezestudy": __version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "python": platform.python_version()}


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
    without it that is an error, so nothing is overwritten by mistake. While it trains, the run
    directory is locked: a second writer stops with RunLockedError (core.lock).
    """
    out_path = Path(out_dir) if out_dir is not None else None
    if out_path is None:
        return _fit(config, dataset, None, resume, quiet, data_dir, force)
    paths.ensure_writable_dir(out_path, "run directory")
    with lock.holding(out_path, "trained", echo=lambda line: print(line, file=sys.stderr)):
        return _fit(config, dataset, out_path, resume, quiet, data_dir, force)


def _fit(config: TrainConfig, dataset: fmnist.FashionMNIST | None, out_path: Path | None, resume: bool,
         quiet: bool, data_dir: str | Path | None, force: bool) -> RunResult:
    device = pick_device(config.device)
    if device.type == "cpu":
        allocator.keep_freed_memory()  # no page faults for each step's activations
    state, old_files = _open_run_dir(out_path, config, resume, force, device) \
        if out_path is not None else (None, ())
    start_epoch = state["epoch"] if state else 0
    stage = Stage(start_epoch, "building the model", saved=start_epoch)
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    threads = torch.get_num_threads()
    choice = (resumed_choice(config, device, state.get("choice")) if state is not None
              else resolve_defaults(config, device))
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


def _prepare(config: TrainConfig, device: torch.device, choice: Choice,
             dataset: fmnist.FashionMNIST | None, data_dir, stage: Stage) -> _Training:
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


def _run_epoch(run: _Training, epoch: int, stage: Stage, quiet: bool) -> dict:
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


def _save_checkpoint(run: _Training, history: list[dict], out_path: Path, stage: Stage) -> None:
    """Checkpoint and history after an epoch; atomic: the previous checkpoint stays until the rename."""
    stage.phase = SAVING
    stage.replacing = file_identity(out_path / CHECKPOINT)
    epochs_done = history[-1]["epoch"]
    state = {"config": run.config.to_dict(), "epoch": epochs_done, "history": history,
             "choice": {"precision": run.precision, "channels_last": run.channels_last,
                        "micro_batch": run.micro_batch},
             "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
             "scheduler": run.scheduler.state_dict(),
             **({"ema": run.ema_model.state_dict()} if run.ema_model is not None else {})}
    state["digest"] = rundir.state_digest(state)  # checked when it is read back
    try:
        fileio.torch_save(state, out_path / CHECKPOINT)
    except (OSError, RuntimeError) as err:  # torch reports a full disk as a 30-line "enforce fail"
        reason = (err.strerror if isinstance(err, OSError) and err.strerror
                  else str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__)
        kept = f"the checkpoint of epoch {stage.saved} is kept" if stage.saved else "no epoch is saved yet"
        raise OSError(f"{out_path / CHECKPOINT}: could not save epoch {epochs_done} ({reason}): is the "
                      f"disk full? {kept}; free space, then continue with {RESUME_HINT}") from None
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

"""Finished runs read back: metrics and history, test predictions, the trained model; which keep weights."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from torch import nn

from squeezestudy.models.summary import weight_bytes
from squeezestudy.training import rundir
from squeezestudy.training.config import TrainConfig, build_model
from squeezestudy.training.rundir import CHECKPOINT, PREDICTIONS, ResultFileError


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


EXPORT_MAX_BYTES = 8 * 2**20  # final weights up to this size are kept for readers (not AlexNet's)


def keeps_weights(params: int) -> bool:
    """Whether a run's final weights (fp32) are small enough to commit."""
    return weight_bytes(params) <= EXPORT_MAX_BYTES

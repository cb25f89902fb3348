"""Trained weights a reader can load without training: the final fp32 state dict of each
small-model run, committed under outputs/weights/<run>.pt, and one call to get a ready model.

    from squeezestudy import weights
    model = weights.load_model("lenet-s0")   # eval mode, on the CPU

The model is built from the run's own config (outputs/runs/<run>/metrics.json). Checkpoints
(outputs/runs/<run>/checkpoint.pt) are not committed; `export` turns one into a weight file:

    python -m squeezestudy.weights export lenet-s1 squeezenet_fmnist-s1
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from . import fileio
from .paths import RUNS_DIR, WEIGHTS_DIR
from .rundir import read_metrics, read_weights
from .train import CHECKPOINT, TrainConfig, build_model, load_trained_model


class WeightsNotFoundError(FileNotFoundError):
    """No committed weight file for a run."""


def path(run: str, weights_dir: str | Path = WEIGHTS_DIR) -> Path:
    return Path(weights_dir) / f"{run}.pt"


def available(weights_dir: str | Path = WEIGHTS_DIR) -> list[str]:
    """Run names that have a weight file, sorted."""
    return sorted(p.stem for p in Path(weights_dir).glob("*.pt"))


def run_config(run: str, runs_dir: str | Path = RUNS_DIR) -> TrainConfig:
    """The training config a run recorded in its metrics.json."""
    metrics_file = Path(runs_dir) / run / "metrics.json"
    if not metrics_file.is_file():
        raise WeightsNotFoundError(f"{metrics_file} not found: {run!r} is not a finished run")
    return TrainConfig(**read_metrics(metrics_file)["config"])


def load_model(run: str, device: str | torch.device = "cpu", weights_dir: str | Path = WEIGHTS_DIR,
               runs_dir: str | Path = RUNS_DIR) -> nn.Module:
    """The trained model of `run` (e.g. "lenet-s0"), built from its config, in eval mode."""
    file = path(run, weights_dir)
    if not file.is_file():
        have = ", ".join(available(weights_dir)) or "none"
        raise WeightsNotFoundError(
            f"no weights for run {run!r} in {weights_dir} (available: {have}). Train it with "
            f"`squeezestudy batch --profile full --only {run}`, then "
            f"`python -m squeezestudy.weights export {run}`.")
    model = build_model(run_config(run, runs_dir))
    model.load_state_dict(read_weights(file))  # a damaged file: an error naming it
    return model.to(device).eval()


def export(run: str, runs_dir: str | Path = RUNS_DIR, weights_dir: str | Path = WEIGHTS_DIR) -> Path:
    """Write the final weights of a run's checkpoint as a plain fp32 state dict (CPU,
    contiguous tensors) to weights_dir/<run>.pt; returns its path."""
    checkpoint = Path(runs_dir) / run / CHECKPOINT
    if not checkpoint.is_file():
        raise WeightsNotFoundError(f"{checkpoint} not found: the run's checkpoint is needed to export "
                                   f"its weights (checkpoints are not committed)")
    model, _ = load_trained_model(checkpoint.parent)
    return save_state_dict(model, path(run, weights_dir))


def save_state_dict(model: nn.Module, file: str | Path) -> Path:
    """The model's parameters and buffers as fp32 CPU contiguous tensors, written atomically."""
    state = {k: (v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu()).contiguous()
             for k, v in model.state_dict().items()}
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    fileio.torch_save(state, file)
    return file


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] != "export":
        print("usage: python -m squeezestudy.weights export RUN [RUN ...]", file=sys.stderr)
        return 2
    failed = 0
    for run in argv[1:]:
        try:
            written = export(run)
        except (WeightsNotFoundError, ValueError) as err:
            print(f"{run}: {err}", file=sys.stderr)
            failed += 1
            continue
        print(f"{run}: {written} ({written.stat().st_size:,} bytes)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

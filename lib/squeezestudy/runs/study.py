"""A study run: trained, resumed or read back, and its final weights exported for readers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from squeezestudy.core import paths
from squeezestudy.data import fashion_mnist as fmnist
from squeezestudy.runs import weights
from squeezestudy.runs.finished import keeps_weights
from squeezestudy.training import rundir
from squeezestudy.training.config import FORCE_HINT, TrainConfig
from squeezestudy.training.loop import ConfigMismatchError, fit
from squeezestudy.training.rundir import RunExistsError


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


def _export_weights(out_dir: Path, metrics: dict, quiet: bool) -> None:
    """A study run (under outputs/runs) small enough to commit gets its final weights in
    outputs/weights/<run>.pt, so that a reader can load it without training (weights.load_model)."""
    if out_dir.resolve().parent != paths.RUNS_DIR.resolve() or not keeps_weights(metrics["params"]):
        return

    written = weights.export(out_dir.name, runs_dir=out_dir.parent, weights_dir=paths.WEIGHTS_DIR)
    if not quiet:
        print(f"final weights: {paths.display_path(written)}")

"""The sealed test split of a search: runs trained with `sealed=True` never evaluate the test images
(no test column in their history, no test predictions, `test_acc` null in metrics.json). Once a
recipe is frozen on validation, `squeezestudy unseal RUN ...` opens the test split once for each of
its runs: it evaluates the run's final weights, writes the test predictions, fills in `test_acc` and
`test_loss`, stamps `unsealed_at` in metrics.json and appends a line to outputs/unsealed.csv. A run
is never unsealed twice: asked again, the command prints what was recorded.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

from squeezestudy.core import fileio, lock
from squeezestudy.core.paths import OUTPUTS, RUNS_DIR
from squeezestudy.data import fashion_mnist as fmnist
from squeezestudy.training import rundir

UNSEAL_LOG = OUTPUTS / "unsealed.csv"
LOG_COLUMNS = ("run", "unsealed_at", "val_acc", "test_acc", "test_loss")


class SealError(ValueError):
    """A run that cannot be unsealed (not sealed, not finished)."""


def expand(names: list[str], runs_dir: str | Path = RUNS_DIR) -> list[str]:
    """Run names, a recipe's prefix (e.g. `headline2-w104-s`) standing for all its runs."""
    runs_dir = Path(runs_dir)
    found: list[str] = []
    for name in names:
        if (runs_dir / name).is_dir():
            found.append(name)
            continue
        matches = sorted(p.name for p in runs_dir.glob(f"{name}*") if p.is_dir())
        if not matches:
            raise SealError(f"no run {name!r} (or run starting with it) in {runs_dir}")
        found += matches
    return list(dict.fromkeys(found))


def unseal(names: list[str], dataset: fmnist.FashionMNIST | None = None, runs_dir: str | Path = RUNS_DIR,
           log: str | Path = UNSEAL_LOG, echo=print) -> list[dict]:
    """Open the test split once for each run (see the module's docstring); returns their metrics.
    Every run is checked before any is unsealed: one that is not a finished sealed run stops all."""
    from squeezestudy.runs.finished import load_trained_model
    from squeezestudy.training.evaluate import evaluate
    from squeezestudy.training.loop import predictions_npz

    runs_dir = Path(runs_dir)
    runs = expand(names, runs_dir)
    metrics_of = {}
    for run in runs:
        metrics, _ = rundir.read_finished(runs_dir / run)
        if not metrics.get("sealed"):
            raise SealError(f"{run} was not trained sealed: its test accuracy was computed every epoch "
                            "(nothing to unseal)")
        metrics_of[run] = metrics
    out = []
    for run, metrics in metrics_of.items():
        if metrics.get("unsealed_at"):
            echo(f"{run}: unsealed already at {metrics['unsealed_at']} (test {metrics['test_acc']:.4f}); "
                 "the test split is opened once")
            out.append(metrics)
            continue
        if dataset is None:
            dataset = fmnist.load()
        model, config = load_trained_model(runs_dir / run)
        mean, std = dataset.mean_std()
        test = fmnist.Batches(dataset.test, config.batch_size_eval, mean=mean, std=std,
                              image_size=config.resolved_image_size())
        precision = metrics.get("precision", "fp32") if metrics.get("device", "cpu") == "cpu" else "fp32"
        test_loss, test_acc = evaluate(model, test, precision)
        predictions = predictions_npz(model, test, precision)
        with lock.holding(runs_dir / run, "unsealed", echo=echo):
            if rundir.read_metrics(runs_dir / run / rundir.METRICS).get("unsealed_at"):
                raise SealError(f"{run} was unsealed by another process meanwhile; the test split is "
                                "opened once")
            fileio.write_bytes(runs_dir / run / rundir.PREDICTIONS, predictions)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            metrics = {**metrics, "test_acc": test_acc, "test_loss": test_loss, "unsealed_at": stamp,
                       "files": {**metrics["files"], rundir.PREDICTIONS: rundir.sha256_bytes(predictions)}}
            fileio.write_text(runs_dir / run / rundir.METRICS, json.dumps(metrics, indent=2) + "\n")
        _append(Path(log), {"run": run, "unsealed_at": stamp, "val_acc": metrics["val_acc"],
                            "test_acc": test_acc, "test_loss": test_loss})
        echo(f"{run}: test {test_acc:.4f} (validation {metrics['val_acc']:.4f}), unsealed {stamp}")
        out.append(metrics)
    return out


def _append(log: Path, row: dict) -> None:
    existing = log.read_text() if log.exists() else ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_COLUMNS, lineterminator="\n")
    if not existing:
        writer.writeheader()
    writer.writerow(row)
    log.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_text(log, existing + buffer.getvalue())

"""A run directory: its files, whether it is finished, and reading them back with clear errors.

`checkpoint.pt` (after every epoch) and `history.csv` (one row per epoch) are written while a
run trains; at its end `predictions.npz`, then `metrics.json`. metrics.json is the finished
marker: written last, it records the SHA-256 of history.csv and predictions.npz, and a
directory counts as finished only when those files match it. Starting a run over removes
metrics.json first, so a directory is finished or in progress, never a mix of two runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from squeezestudy.core import fileio

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.csv"
PREDICTIONS = "predictions.npz"
METRICS = "metrics.json"
FIGURES = ("curves.png", "confusion.png")  # drawn from the results by notebook 05
# Removal order when a run starts over: the finished marker first, the checkpoint last, so an
# interrupted removal leaves an unfinished directory whose remaining files belong together.
RUN_FILES = (METRICS, PREDICTIONS, *FIGURES, HISTORY, CHECKPOINT)
RESULT_FILES = (METRICS, PREDICTIONS, *FIGURES)  # rewritten when a resumed run finishes

HISTORY_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss",
                   "test_acc", "train_s", "eval_s", "images_per_s")
TEST_COLUMNS = ("test_loss", "test_acc")  # absent from a sealed run's history: never computed
METRICS_KEYS = ("model", "params", "epochs", "seed", "precision", "device", "test_acc", "val_acc",
                "train_acc", "train_time_s", "images_per_s", "config")
CHECKPOINT_KEYS = ("config", "epoch", "history", "model", "optimizer", "scheduler")

RETRAIN = ("retrain the run with force=True (command line: --force), or restore the file from git "
           "if it is committed")


class ResultFileError(ValueError):
    """A run file that is missing, empty, truncated or corrupt."""

    def __init__(self, message: str, problem: str | None = None) -> None:
        super().__init__(message)
        self.problem = problem or message  # the fault alone, without the advice


class ResultFileMissingError(FileNotFoundError):
    """A run file that is not there (a FileNotFoundError, so callers can tell 'not yet')."""

    def __init__(self, message: str, problem: str) -> None:
        super().__init__(message)
        self.problem = problem


class RunExistsError(ValueError):
    """Training would overwrite a finished or interrupted run without being told to."""


def _fault(path: Path, what: str, advice: str = RETRAIN) -> ResultFileError:
    return ResultFileError(f"{path}: {what}; {advice}", problem=f"{path.name} is {what}"
                           if what.startswith("empty") else f"{path.name}: {what}")


def _require_file(path: Path, advice: str) -> None:
    if not path.is_file():
        raise ResultFileMissingError(f"{path}: missing; {advice}", problem=f"{path.name} is missing")
    if path.stat().st_size == 0:
        raise _fault(path, "empty (0 bytes)", advice)


def read_metrics(path: str | Path, advice: str = RETRAIN) -> dict:
    path = Path(path)
    _require_file(path, advice)
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _fault(path, f"not valid JSON ({err}), truncated or corrupt", advice) from None
    if not isinstance(metrics, dict):
        raise _fault(path, "not a JSON object", advice)
    missing = [k for k in METRICS_KEYS if k not in metrics]
    if missing:
        raise _fault(path, f"lacks {', '.join(missing)}", advice)
    if not isinstance(metrics["config"], dict):
        raise _fault(path, "its config is not a JSON object", advice)
    return metrics


def read_history(path: str | Path, advice: str = RETRAIN) -> pd.DataFrame:
    """The per-epoch table, checked: every column, no gaps, epochs 1..n."""
    path = Path(path)
    _require_file(path, advice)
    try:
        history = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise _fault(path, f"not a readable CSV table ({err})", advice) from None
    sealed = not any(c in history.columns for c in TEST_COLUMNS)
    required = [c for c in HISTORY_COLUMNS if not (sealed and c in TEST_COLUMNS)]
    missing = [c for c in required if c not in history.columns]
    if missing:
        raise _fault(path, f"lacks the column(s) {', '.join(missing)}: truncated or corrupt", advice)
    values = history[required]
    if len(history) == 0 or not all(pd.api.types.is_numeric_dtype(t) for t in values.dtypes) \
            or values.isna().any().any():
        raise _fault(path, "has empty or non-numeric cells: truncated or corrupt", advice)
    if history["epoch"].tolist() != list(range(1, len(history) + 1)):
        raise _fault(path, "its epochs are not 1, 2, ... n: truncated or corrupt", advice)
    return history


def read_predictions(path: str | Path, advice: str = RETRAIN) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class as int64, confidence as float32) per test image."""
    path = Path(path)
    _require_file(path, advice)
    try:
        with np.load(path, allow_pickle=False) as f:
            pred, confidence = f["pred"].astype(np.int64), f["confidence"].astype(np.float32)
    except Exception as err:  # zipfile, zlib, numpy's format checks: all mean a damaged file
        raise _fault(path, f"cannot be read as predictions ({type(err).__name__}: {err}), "
                     "truncated or corrupt", advice) from None
    if pred.ndim != 1 or pred.shape != confidence.shape:
        raise _fault(path, f"pred {pred.shape} and confidence {confidence.shape} do not match", advice)
    return pred, confidence


def read_checkpoint(path: str | Path, map_location="cpu", advice: str = RETRAIN) -> dict:
    """A training checkpoint (tensors and plain data only, so nothing in it is executed)."""
    import torch

    path = Path(path)
    _require_file(path, advice)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # zip, pickle and tensor-storage errors all mean a damaged file
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise _fault(path, f"cannot be read as a checkpoint ({type(err).__name__}: {first_line}), "
                     "truncated or corrupt", advice) from None
    if not isinstance(state, dict) or any(k not in state for k in CHECKPOINT_KEYS):
        raise _fault(path, "is not a training checkpoint of this project", advice)
    if "digest" in state and state_digest(state) != state["digest"]:  # (older checkpoints have none)
        raise _fault(path, "does not hold what was saved (its checksum differs): damaged on disk", advice)
    return state


def state_digest(state: dict) -> str:
    """SHA-256 over a checkpoint's contents (every tensor's bytes, dtype and shape, and the plain
    data), without its own "digest": saved in the checkpoint, checked when it is read back, so a
    flipped bit inside a tensor, which torch.load does not notice, is found."""
    import torch

    digest = hashlib.sha256()

    def feed(value, key: str) -> None:
        digest.update(key.encode())
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(value, dict):
            for k in sorted(value, key=str):
                feed(value[k], f"{key}/{k}")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                feed(v, f"{key}[{i}]")
        else:
            digest.update(repr(value).encode())

    feed({k: v for k, v in state.items() if k != "digest"}, "")
    return digest.hexdigest()


def read_weights(path: str | Path, advice: str | None = None) -> dict:
    """A state dict saved by itself (outputs/weights, outputs/compression): tensors only."""
    import torch

    path = Path(path)
    advice = advice or f"restore it from git (git checkout -- {path}) or write it again"
    _require_file(path, advice)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # zip, pickle and tensor-storage errors all mean a damaged file
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise _fault(path, f"cannot be read as weights ({type(err).__name__}: {first_line}), "
                     "truncated or corrupt", advice) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _fault(path, "is not a state dict (parameter name -> tensor)", advice)
    return state


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def predictions_npz(pred: np.ndarray, confidence: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, pred=pred.astype(np.uint8), confidence=confidence.astype(np.float16))
    return buffer.getvalue()


def write_finished(run_dir: Path, history_csv: str, predictions: bytes | None, metrics: dict) -> dict:
    """Write the results, metrics.json last with the files' digests; returns the metrics written.
    `predictions` None: a sealed run, whose test predictions are made by `unseal`."""
    history_bytes = history_csv.encode("utf-8")
    fileio.write_bytes(run_dir / HISTORY, history_bytes)
    files = {HISTORY: sha256_bytes(history_bytes)}
    if predictions is not None:
        fileio.write_bytes(run_dir / PREDICTIONS, predictions)
        files[PREDICTIONS] = sha256_bytes(predictions)
    metrics = {**metrics, "files": files}
    fileio.write_text(run_dir / METRICS, json.dumps(metrics, indent=2) + "\n")
    return metrics


def inconsistency(run_dir: Path, metrics: dict) -> str | None:
    """Why the files of a run directory do not belong to its metrics.json (None: they do)."""
    for name, digest in (metrics.get("files") or {}).items():
        path = run_dir / name
        if not path.is_file():
            return f"{name} is missing"
        if sha256_bytes(path.read_bytes()) != digest:
            return f"{name} is not the file {METRICS} was written with"
    sealed = bool(metrics.get("sealed"))
    try:
        history = read_history(run_dir / HISTORY)
        if not sealed or metrics.get("unsealed_at"):
            read_predictions(run_dir / PREDICTIONS)
    except (ResultFileError, ResultFileMissingError) as err:
        return err.problem
    if len(history) != metrics["epochs"]:
        return f"{HISTORY} has {len(history)} epochs, {METRICS} says {metrics['epochs']}"
    if sealed:  # no test column; the last validation accuracy ties the two together
        if "test_acc" in history.columns:
            return f"{HISTORY} of a sealed run has test columns"
        if not math.isclose(float(history["val_acc"].iloc[-1]), float(metrics["val_acc"]), rel_tol=1e-9):
            return f"the last epoch of {HISTORY} does not match {METRICS}"
        return None
    if not math.isclose(float(history["test_acc"].iloc[-1]), float(metrics["test_acc"]), rel_tol=1e-9):
        return f"the last epoch of {HISTORY} does not match {METRICS}"
    return None


def read_finished(run_dir: str | Path) -> tuple[dict, pd.DataFrame]:
    """(metrics, history) of a finished run; ResultFileError if it is not finished or its files
    do not belong together."""
    run_dir = Path(run_dir)
    if not (run_dir / METRICS).is_file():
        raise ResultFileMissingError(
            f"{run_dir / METRICS}: missing, the run is not finished; finish it with resume=True "
            "(command line: --resume), or train it", problem=f"{METRICS} is missing")
    metrics = read_metrics(run_dir / METRICS)
    problem = inconsistency(run_dir, metrics)
    if problem:
        raise ResultFileError(f"{run_dir}: not a consistent finished run ({problem}); {RETRAIN}")
    return metrics, read_history(run_dir / HISTORY)


def describe_existing(run_dir: Path) -> str | None:
    """What run a directory holds ('a finished run', 'an interrupted run...'), None if none."""
    present = [name for name in RUN_FILES if (run_dir / name).is_file()]
    if not present:
        return None
    if METRICS in present:
        return "a finished run"
    if CHECKPOINT in present:
        return f"an interrupted run ({CHECKPOINT})"
    return f"files of a run ({', '.join(present)})"


def remove(run_dir: Path, names: tuple[str, ...]) -> None:
    """Delete these files of a run, in order (the finished marker first)."""
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            (run_dir / name).unlink()


def remove_stale_temporaries(run_dir: Path) -> None:
    """Temporary files of atomic writes that a killed process left behind (fileio names them
    `.<name>.<random>.tmp`); a checkpoint's can be as large as the checkpoint."""
    for name in RUN_FILES:
        for stale in run_dir.glob(f".{name}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()

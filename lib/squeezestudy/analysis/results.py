"""Reading finished runs back: one table row per run, histories, and the comparison table."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from squeezestudy.analysis import stats
from squeezestudy.core.paths import RUNS_DIR
from squeezestudy.models.summary import size_mb
from squeezestudy.training.rundir import HISTORY, read_history, read_metrics


def collect_runs(runs_dir: str | Path = RUNS_DIR) -> pd.DataFrame:
    """One row per finished run (a directory with metrics.json), sorted by run name; a damaged
    metrics.json is an error naming it (a table silently missing a run would mislead)."""
    rows = []
    for metrics_file in sorted(Path(runs_dir).glob("*/metrics.json")):
        m = read_metrics(metrics_file)
        rows.append({
            "run": metrics_file.parent.name, "model": m["model"], "seed": m["seed"],
            "precision": m["precision"], "device": m["device"], "epochs": m["epochs"],
            "params": m["params"], "test_acc": m["test_acc"], "val_acc": m["val_acc"],
            "train_acc": m["train_acc"], "train_time_s": m["train_time_s"],
            "images_per_s": m["images_per_s"], "device_name": m.get("device_name", m["device"]),
            "augment": m["config"].get("augment", False), "config": m["config"],
        })
    if not rows:
        raise FileNotFoundError(f"no finished runs (*/metrics.json) in {runs_dir}; run the batch first")
    table = pd.DataFrame(rows)
    table.attrs["runs_dir"] = str(runs_dir)  # where the runs' other files are
    return table


def select(runs: pd.DataFrame, pattern: str) -> pd.DataFrame:
    """The runs whose name matches the regular expression `pattern` (the whole name)."""
    return runs[runs.run.map(lambda name: re.fullmatch(pattern, name) is not None)]


def describe_recipe(config: dict) -> str:
    """A training config in one short line: `lr 0.01, wd 0.0005, 30 ep, bs 256, aug`."""
    text = (f"{config['optimizer']} lr {config['lr']}, wd {config['weight_decay']}, "
            f"{config['epochs']} ep, bs {config['batch_size']}")
    if config.get("augment"):
        text += ", aug"
    if config.get("label_smoothing"):
        text += f", ls {config['label_smoothing']}"
    return text


def collect_histories(runs: pd.DataFrame, runs_dir: str | Path = RUNS_DIR) -> pd.DataFrame:
    frames = []
    for _, row in runs.iterrows():
        h = read_history(Path(runs_dir) / row["run"] / HISTORY)
        h.insert(0, "run", row["run"])
        h.insert(1, "model", row["model"])
        h.insert(2, "seed", row["seed"])
        h.insert(3, "precision", row["precision"])
        frames.append(h)
    return pd.concat(frames, ignore_index=True)


def loss_turn(history: pd.DataFrame) -> pd.Series:
    """Of one run's history: the epoch of the lowest validation and test loss, that loss, and
    the loss at the last epoch (a loss that rises while accuracy holds: over-confidence)."""
    h = history.sort_values("epoch").reset_index(drop=True)
    v, t = h.val_loss, h.test_loss
    return pd.Series({"val_min_epoch": h.epoch[v.idxmin()], "val_loss_min": v.min(),
                      "val_loss_last": v.iloc[-1], "test_min_epoch": h.epoch[t.idxmin()],
                      "test_loss_min": t.min(), "test_loss_last": t.iloc[-1]})


def comparison_table(runs: pd.DataFrame, mult_adds: dict[str, int] | None = None,
                     by: tuple[str, ...] = ("model",)) -> pd.DataFrame:
    """Per model: parameters, size, multiply-adds, test accuracy mean +- std over seeds,
    training time and throughput."""
    grouped = runs.groupby(list(by), sort=False)
    test = stats.aggregate(runs, list(by))
    table = pd.DataFrame({
        "params": grouped["params"].first(),
        "size_MB_fp32": grouped["params"].first().map(lambda p: round(size_mb(p), 3)),
        "seeds": test["n"],
        "epochs": grouped["epochs"].first(),
        "test_acc_mean": test["mean"].round(4),
        "test_acc_std": test["std"].fillna(0).round(4),
        "val_acc_mean": stats.aggregate(runs, list(by), "val_acc")["mean"].round(4),
        "train_min": (grouped["train_time_s"].mean() / 60).round(1),
        "images_per_s": grouped["images_per_s"].median().round(0).astype(int),
        "device": grouped["device_name"].first(),
    })
    if mult_adds is not None:
        table.insert(2, "mult_adds_M", [round(mult_adds[m] / 1e6, 2)
                                        for m in table.index.get_level_values("model")])
    return table

"""Tables of the note's experiment and the paper's experiments at this scale (design space, depth, bypass)."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from squeezestudy.analysis import stats, sweeps
from squeezestudy.core.paths import DEPTH_TRAIN_ACCURACY, RUNS_DIR
from squeezestudy.models.summary import size_mb
from squeezestudy.report.markdown import ReportError, markdown_table, runs_matching, trained_on

NOTE_MODELS = {"squeezenet_fmnist": "one-Fire SqueezeNet", "lenet": "LeNet (no padding)",
               "alexnet": "AlexNet at 112x112"}


def note_table(runs: pd.DataFrame) -> str:
    """The note's experiment: the three models, test accuracy over seeds."""
    from squeezestudy.models.summary import total_mult_adds
    from squeezestudy.training.config import TrainConfig, build_model

    rows = []
    for model, label in NOTE_MODELS.items():
        group = runs_matching(rf"{model}-s\d+", runs)
        config = TrainConfig(**group.config.iloc[0])
        macs = total_mult_adds(build_model(config), config.resolved_image_size(), in_channels=1)
        params = int(group.params.iloc[0])
        rows.append({"model": label, "parameters (note)": f"{params:,} ({params / 1e6:.2f}M)",
                     "multiply-adds": f"{macs / 1e6:.2f}M",
                     "test accuracy, mean ± std": f"**{stats.mean_std(group.test_acc)}%**",
                     "seeds": len(group), "epochs": int(group.epochs.iloc[0]),
                     "trained on": trained_on(group)})
    return markdown_table(pd.DataFrame(rows), "lrrrrrl")


def _sweep_table(runs: pd.DataFrame, pattern: str, key: str, title: str, fmt: Callable) -> str:
    group = runs_matching(pattern, runs)
    group = group.assign(**{key: [c["model_kwargs"][key] for c in group.config]})
    points = stats.aggregate(group, key).sort_index()
    sizes = group.groupby(key).params.first().map(size_mb)
    columns = [fmt(v) for v in points.index]
    frame = pd.DataFrame([["size, MB (fp32)", *[f"{sizes[v]:.2f}" for v in points.index]],
                          ["seeds", *[int(n) for n in points.n]],
                          ["test accuracy", *[stats.mean_std(group.loc[group[key] == v, "test_acc"])
                                              for v in points.index]]],
                         columns=[title, *columns])
    return markdown_table(frame, "l" + "r" * len(columns))


def sr_table(runs: pd.DataFrame) -> str:
    return _sweep_table(runs, r"design-sr[\d.]+-s\d+", "sr", "squeeze ratio (pct3x3 0.5)", lambda v: f"{v}")


def pct_table(runs: pd.DataFrame) -> str:
    return _sweep_table(runs, r"design-(pct[\d.]+|sr0\.5)-s\d+", "pct3x3", "share of 3x3 filters (SR 0.5)",
                        lambda v: f"{v:.0%}")


DEPTH_SETUPS = {"1 Fire": r"squeezenet_fmnist-s\d+", "8 Fires": r"depth-fire8-s\d+",
                "1 Fire, augmented": r"depth-fire1-aug-s\d+", "8 Fires, augmented": r"depth-fire8-aug-s\d+"}


def depth_table(runs: pd.DataFrame) -> str:
    """Test accuracy and the train-test gap; training accuracy in eval mode from notebook 09."""
    groups = {setup: runs_matching(pattern, runs) for setup, pattern in DEPTH_SETUPS.items()}
    try:
        train_eval = sweeps.cached_train_accuracy([r for g in groups.values() for r in g.run],
                                                  DEPTH_TRAIN_ACCURACY, runs.attrs.get("runs_dir", RUNS_DIR))
    except FileNotFoundError as e:
        raise ReportError(f"{e} (notebooks/09_depth.ipynb)") from None
    train_eval = train_eval.set_index("run").train_eval_acc
    rows = []
    for setup, group in groups.items():
        train_acc = train_eval.loc[group.run]
        rows.append({"setup": setup, "seeds": len(group),
                     "test accuracy": stats.mean_std(group.test_acc),
                     "train accuracy (eval mode)": f"{100 * train_acc.mean():.2f}",
                     "gap, points": f"{100 * (train_acc.mean() - group.test_acc.mean()):.2f}"})
    return markdown_table(pd.DataFrame(rows), "lrrrr")


def bypass_table(runs: pd.DataFrame) -> str:
    rows = []
    for kind, pattern in {"none": r"design-sr0\.125-s\d+", "simple": r"bypass-simple-s\d+",
                          "complex": r"bypass-complex-s\d+"}.items():
        group = runs_matching(pattern, runs)
        rows.append({"bypass (SR 0.125)": kind, "parameters": f"{int(group.params.iloc[0]):,}",
                     "seeds": len(group), "test accuracy": stats.mean_std(group.test_acc)})
    return markdown_table(pd.DataFrame(rows), "lrrr")

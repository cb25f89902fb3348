"""The paper's design-space experiments (notebooks 08-10): sweep runs read back by name,
one row per sweep point with its seed spread, where a curve levels off, and the clean
training accuracy that the depth study needs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from squeezestudy.analysis import stats
from squeezestudy.analysis.results import collect_runs, select
from squeezestudy.core import fileio
from squeezestudy.core.paths import RUNS_DIR
from squeezestudy.data import fashion_mnist as fmnist
from squeezestudy.models.summary import size_mb
from squeezestudy.runs.finished import load_predictions, load_trained_model
from squeezestudy.training.evaluate import evaluate
from squeezestudy.training.rundir import CHECKPOINT, METRICS, read_metrics

# What the paper reports (Iandola et al. 2016), on ImageNet, for the comparisons in the notebooks.
PAPER = {
    # section 5.1, Figure 3(a): top-5 accuracy rises from 80.3% (SR 0.125, 4.8 MB) to 86.0%,
    # where it plateaus from SR 0.75 (19 MB) on; SR 1.0 adds size, not accuracy.
    "sr_plateau": 0.75,
    # section 5.2, Figure 3(b), SR 0.5: top-5 accuracy plateaus at 85.6% from 50% 3x3 filters on.
    "pct3x3_plateau": 0.5,
    # section 6, Table 3: (top-1 %, top-5 %, model size MB) of SqueezeNet v1.0 with bypass.
    "bypass": {"none": (57.5, 80.3, 4.8), "simple": (60.4, 82.5, 4.8), "complex": (58.8, 82.0, 7.7)},
}


def collect(pattern: str, runs_dir: str | Path = RUNS_DIR) -> pd.DataFrame:
    """The finished runs whose name matches the regular expression `pattern` (whole name),
    one row per run, with the builder arguments (model_kwargs) as columns and the fp32 size."""
    runs = collect_runs(runs_dir)
    runs = select(runs, pattern)
    if runs.empty:
        raise FileNotFoundError(f"no finished run in {runs_dir} matches {pattern!r}; "
                                "run its sweep first: squeezestudy batch --profile full")
    kwargs = pd.DataFrame([c.get("model_kwargs", {}) for c in runs.config], index=runs.index)
    runs = pd.concat([runs, kwargs], axis=1)
    runs["size_MB"] = runs.params.map(size_mb)
    runs["classes_predicted"] = [classes_predicted(Path(runs_dir) / name) for name in runs.run]
    return runs.reset_index(drop=True)


def classes_predicted(run_dir: str | Path) -> int:
    """How many of the 10 classes the run's final model predicts at least once on the test set.
    Below 10 means a dead class: SqueezeNet's head (conv10, ReLU, average pooling) cannot bring
    a class back once conv10's output for it is negative everywhere. -1: no predictions saved."""
    try:
        predictions, _ = load_predictions(run_dir)
    except FileNotFoundError:
        return -1
    return int(torch.unique(predictions).numel())


def points(runs: pd.DataFrame, by: str) -> pd.DataFrame:
    """One row per value of `by`: parameters, size, seeds, test accuracy mean / std / min / max,
    training and validation accuracy (means)."""
    grouped = runs.groupby(by)
    test = stats.aggregate(runs, by)
    table = pd.DataFrame({
        "params": grouped.params.first(),
        "size_MB": grouped.size_MB.first().round(3),
        "seeds": test["n"],
        "test_acc_mean": test["mean"],
        "test_acc_std": test["std"].fillna(0.0),
        "test_acc_min": grouped.test_acc.min(),
        "test_acc_max": grouped.test_acc.max(),
        "train_acc_mean": stats.aggregate(runs, by, "train_acc")["mean"],
        "val_acc_mean": stats.aggregate(runs, by, "val_acc")["mean"],
        "runs_with_dead_class": grouped.classes_predicted.agg(lambda c: int(((c >= 0) & (c < 10)).sum())),
    })
    return table.sort_index()


def plateau(table: pd.DataFrame, mean: str = "test_acc_mean", std: str = "test_acc_std",
            n: str = "seeds"):
    """The smallest setting (index) whose mean accuracy is not distinguishable from the best
    point's: Welch's 95% interval of (best - setting) includes zero. Past it, a bigger model
    buys nothing the seeds can tell apart. A point with a single seed cannot be tested and
    does not qualify (unless it is the best)."""
    if table.empty:
        raise ValueError("no sweep points")
    best = table[mean].idxmax()
    for setting in table.index:
        if setting == best:
            return setting
        c = against_best(table, setting, mean, std, n)
        if c.testable and not c.distinguishable:
            return setting
    return best


def against_best(table: pd.DataFrame, setting, mean: str = "test_acc_mean", std: str = "test_acc_std",
                 n: str = "seeds") -> stats.Comparison:
    """Welch's comparison of the sweep's best point against `setting`."""
    best = table[mean].idxmax()
    b, s = table.loc[best], table.loc[setting]
    return stats.welch_from_stats(b[mean], b[std], b[n], s[mean], s[std], s[n],
                                  f"{best:g}", f"{setting:g}")


def train_accuracy(run_dirs: list[Path], dataset: fmnist.FashionMNIST) -> pd.DataFrame:
    """Accuracy of each run's final model on its training split, in eval mode (no dropout,
    no augmentation): the clean number the train-test gap needs. Needs the checkpoints.
    `finished_at` says which training of the run it belongs to."""
    mean, std = dataset.mean_std()
    rows = []
    for run_dir in run_dirs:
        model, config = load_trained_model(run_dir)
        batches = fmnist.Batches(config.train_split(dataset), 1000, mean=mean, std=std,
                                 device=torch.device("cpu"),
                                 image_size=config.resolved_image_size(), shuffle=False,
                                 drop_last=False, augment=False, channels_last=False)
        loss, acc = evaluate(model, batches)
        rows.append({"run": Path(run_dir).name, "finished_at": _finished_at(Path(run_dir)),
                     "train_eval_acc": acc, "train_eval_loss": loss})
    return pd.DataFrame(rows)


def _finished_at(run_dir: Path) -> str | None:
    """When the run's training finished (metrics.json); None where the run is not here."""
    return read_metrics(run_dir / METRICS).get("finished_at") if (run_dir / METRICS).is_file() else None


def cached_train_accuracy(runs: list[str], cache: str | Path, runs_dir: str | Path = RUNS_DIR,
                          load_dataset: Callable[[], fmnist.FashionMNIST] | None = None) -> pd.DataFrame:
    """`train_accuracy` of the named runs, read from `cache` (a CSV, committed because the
    checkpoints are not). A run the cache lacks, or holds for an earlier training of the run
    (its `finished_at` is not the run's), is computed from its checkpoint and written to the
    cache, so new seeds join without the old runs' checkpoints and a retrained run is never read
    stale. `load_dataset=None` only reads."""
    cache = Path(cache)
    table = (pd.read_csv(cache, dtype={"finished_at": "string"}) if cache.is_file() else
             pd.DataFrame(columns=["run", "finished_at", "train_eval_acc", "train_eval_loss"]))
    finished = {r: _finished_at(Path(runs_dir) / r) for r in runs}
    current = {row.run for row in table.itertuples()
               if finished.get(row.run) is None or row.finished_at == finished[row.run]}
    missing = [r for r in runs if r not in current]
    if missing:
        lacking = [r for r in missing if r not in set(table.run)]
        stale = [r for r in missing if r not in lacking]
        reason = " and ".join(([f"lacks {lacking}"] if lacking else []) +
                              ([f"holds an earlier training of {stale}"] if stale else []))
        no_checkpoint = [r for r in missing if not (Path(runs_dir) / r / CHECKPOINT).is_file()]
        if no_checkpoint:
            raise FileNotFoundError(f"{cache} {reason}, and {no_checkpoint} have no checkpoint: "
                                    "train them (`squeezestudy batch --profile full --only RUN`), "
                                    "then re-execute the notebook")
        if load_dataset is None:
            raise FileNotFoundError(f"{cache} {reason}: re-execute the notebook outside smoke "
                                    "mode to compute them from their checkpoints")
        added = train_accuracy([Path(runs_dir) / r for r in missing], load_dataset())
        table = pd.concat([table[~table.run.isin(missing)], added], ignore_index=True)
        table = table.sort_values("run", ignore_index=True)
        fileio.write_text(cache, table.to_csv(index=False))
    return table.set_index("run").loc[list(runs)].reset_index()

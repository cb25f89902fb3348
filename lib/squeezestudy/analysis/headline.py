"""The paper's headline at Fashion-MNIST scale (notebook 12): AlexNet-level accuracy with 50x
fewer parameters, and a Deep-Compressed file under 0.5 MB. The targets, every setting of the
study as one point (parameters, fp32 file size, test accuracy over seeds), and the verdicts."""

from __future__ import annotations

import math
import re

import pandas as pd

from squeezestudy.analysis import stats
from squeezestudy.analysis.results import loss_turn, select
from squeezestudy.compression.deep_compression import within as within_drop
from squeezestudy.models.summary import weight_bytes

PARAMETER_RATIO = 50  # the paper: AlexNet-level accuracy with 50x fewer parameters
SIZE_LIMIT_BYTES = 500_000  # the paper's title: < 0.5 MB
FILE_RATIO = 500  # the Deep Compression goal: >= 500x smaller than AlexNet's fp32 file
TARGET_ACC = 0.930  # AlexNet-112's level (its mean of 93.56% less its seed spread, rounded down)
SEEDS = r"-s\d+"  # how a run name ends: its seed
ALEXNET_RUNS = r"alexnet-s\d+"
HEADLINE_RUNS = r"headline-b96-s\d+"  # the three seeds of the headline recipe
REGULARISED_RUNS = r"headline-b96aug-s\d+"  # the same network, AlexNet-112's regularisation
REGULARISED_60_RUNS = r"headline-b96aug60-s\d+"  # the regularised recipe, 60 epochs
BATCH_NORM_RUNS = r"headline-bn-s\d+"  # the labelled variant: batch norm after each squeeze
# The second round's chosen recipe (docs/headline-search.md): 120 epochs, trained sealed, its test
# split opened once for its three seeds after it was frozen (`squeezestudy unseal`).
SECOND_ROUND_RUNS = r"headline2-e120-s\d+"
# The recipes tried on the headline network, in the order tried (the pattern of their seeds: the
# runs of profile `headline`); each is judged on validation by its seed-0 run.
RECIPES = {
    HEADLINE_RUNS: "plain (no augmentation, no label smoothing)",
    REGULARISED_RUNS: "regularised (augmentation, label smoothing 0.1)",
    REGULARISED_60_RUNS: "60-epoch regularised (augmentation, label smoothing 0.1, 60 epochs)",
}


def seed_run(pattern: str, seed: int = 0) -> str:
    """The run of one seed of a setting given as the pattern of its seeds (`...-s\\d+`)."""
    return pattern.removesuffix(SEEDS) + f"-s{seed}"


TRIAL_RUNS = tuple(seed_run(pattern) for pattern in RECIPES)  # the runs the choice looks at

# Families of the study's run names, for the figure's legend (first match wins).
FAMILIES = (
    (r"headline-bn", "headline SqueezeNet + batch norm (outside the paper's family)"),
    (r"headline-", "headline SqueezeNet"),
    (r"(squeezenet_fmnist|lenet|alexnet)$", "the note's models"),
    (r"design-", "design-space sweeps"),
    (r"depth-", "depth"),
    (r"bypass-", "bypass"),
)


def setting_name(run: str) -> str:
    """A run's setting: its name without the seed suffix."""
    return re.sub(SEEDS + "$", "", run)


def seeds_pattern(run: str) -> str:
    """The pattern of every seed of a run's setting (a run name or a setting name)."""
    return setting_name(run) + SEEDS


def family(setting: str) -> str:
    return next((label for pattern, label in FAMILIES if re.match(pattern, setting)), "other")


def parameter_budget(alexnet_params: int) -> int:
    return alexnet_params // PARAMETER_RATIO


def study_points(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per setting of the study: parameters, fp32 weight bytes (4 a parameter), seeds,
    test accuracy mean and sample std, validation mean; in the study's order. Runs whose test
    split is still sealed (the second round's search) have no test accuracy and are left out."""
    runs = runs[runs.test_acc.notna()]
    runs = runs.assign(setting=runs.run.map(setting_name))
    test = stats.aggregate(runs, "setting")
    grouped = runs.groupby("setting", sort=False)
    table = pd.DataFrame({
        "family": [family(s) for s in test.index],
        "params": grouped.params.first(),
        "fp32_bytes": grouped.params.first().map(weight_bytes),
        "seeds": test["n"], "test_acc_mean": test["mean"], "test_acc_std": test["std"],
        "val_acc_mean": stats.aggregate(runs, "setting", "val_acc")["mean"],
    })
    table.index.name = "setting"
    return table


def seeds(pattern: str, runs: pd.DataFrame) -> pd.DataFrame:
    """The finished runs matching `pattern`, one row each (run, seed, params, val and test accuracy)."""
    chosen = select(runs, pattern)
    if chosen.empty:
        raise FileNotFoundError(f"no finished run matches {pattern!r}; train it first: "
                                "squeezestudy batch --profile headline")
    return chosen[["run", "seed", "params", "val_acc", "test_acc", "train_acc", "train_time_s",
                   "device_name"]].reset_index(drop=True)


def verdicts(headline: pd.DataFrame, alexnet: pd.DataFrame, budget: int,
             label: str = "headline SqueezeNet") -> list[str]:
    """The headline's claims for the seeds of one setting (`label`), each no stronger than its
    evidence."""
    params = int(headline.params.iloc[0])
    mean = headline.test_acc.mean()
    lines = [f"parameters: {params:,} of a budget of {budget:,} (1/{PARAMETER_RATIO} of AlexNet-112): "
             f"{'within' if params <= budget else 'over'} it, {alexnet.params.iloc[0] / params:.1f}x fewer "
             "than AlexNet-112",
             f"test accuracy: {stats.mean_std(headline.test_acc)}% (n = {len(headline)}) against the "
             f"target {TARGET_ACC:.1%}: mean {'reached' if mean >= TARGET_ACC else 'not reached'}"
             + ("" if len(headline) >= 3 else f" (only {len(headline)} seed(s) of 3)")]
    if len(headline) > 1:  # how sure: the interval of (mean - target)
        lines.append(stats.paired(headline.test_acc - TARGET_ACC, f"{label} − {TARGET_ACC:.1%}").verdict())
    lines.append(stats.welch(headline.test_acc, alexnet.test_acc, label, "AlexNet-112").verdict())
    return lines


def recipe_trials(runs: pd.DataFrame, histories: pd.DataFrame) -> pd.DataFrame:
    """One row per recipe of RECIPES that has finished: final and best validation accuracy, the
    epoch of the lowest validation loss and how far it rose by the end, training accuracy; and
    test accuracy, shown but not used for the choice."""
    rows = []
    for pattern, recipe in RECIPES.items():
        run = seed_run(pattern)
        row = runs[runs.run == run]
        if row.empty:
            continue
        h = histories[histories.run == run]
        turn = loss_turn(h)
        rows.append({"recipe": recipe, "run": run, "val_acc": row.val_acc.item(),
                     "val_acc_best": h.val_acc.max(), "val_loss_min_epoch": int(turn.val_min_epoch),
                     "val_loss_rise": turn.val_loss_last / turn.val_loss_min - 1,
                     "train_acc": row.train_acc.item(), "test_acc": row.test_acc.item()})
    return pd.DataFrame(rows)


def chosen_runs(trials: pd.DataFrame) -> str:
    """The pattern of every seed of the recipe that validation prefers (the only one, if one has
    finished): the headline's claim is judged on those seeds."""
    if trials.empty:
        raise ValueError("no recipe has finished: train profile `headline` first")
    return seeds_pattern(trials.loc[trials.val_acc.idxmax(), "run"])


def recipe_label(pattern: str) -> str:
    """A recipe's short name: `plain recipe`, `60-epoch regularised recipe`."""
    return RECIPES[pattern].split(" (")[0] + " recipe"


def recipe_comparisons(chosen: str, runs: pd.DataFrame) -> list[stats.Comparison]:
    """Welch's test of the chosen recipe's seeds against every other recipe with at least two
    finished seeds (one seed has no spread to test)."""
    mine = select(runs, chosen).test_acc
    return [stats.welch(mine, other.test_acc, f"chosen ({recipe_label(chosen)})", recipe_label(pattern))
            for pattern in RECIPES
            if pattern != chosen and len(other := select(runs, pattern)) > 1]


def recipe_choice(trials: pd.DataFrame) -> str:
    """The validation rule's pick among the recipes tried (final validation accuracy), worded for
    one seed each."""
    if len(trials) < 2:
        return f"{len(trials)} recipe(s) finished: nothing to choose between"
    best = trials.loc[trials.val_acc.idxmax()]
    margin = 100 * (best.val_acc - trials.val_acc.drop(best.name).max())
    return (f"validation prefers the {best.recipe} recipe by {margin:.2f} points (seed 0 of each: "
            "a choice of recipe, not a measured difference; its test accuracy played no part)")


LAYER_SEARCH_RECIPE = "headline2-e120"  # the third 500x round compressed this recipe's seeds
MAX_FILE_VAL_DROP = 0.5  # points of validation accuracy a compressed file may cost (the plan's rule)


def file_search(records: pd.DataFrame, goal_bytes: float, next_stage: str = "its seeds 1 and 2 follow "
                "(stage B)") -> tuple[pd.DataFrame, pd.Series | None, str]:
    """A 500x search on seed 0 (docs/headline-search.md: the second and third rounds), read from its sealed
    records (deep_compression.records(..., sealed=True)): each setting flagged against the line and
    the rule, the chosen one (the smallest file under the line within MAX_FILE_VAL_DROP points of
    validation; None if none is) and the verdict in words."""
    table = records.assign(under_line=records.file_bytes <= math.floor(goal_bytes),
                           within_rule=within_drop(records.val_change, MAX_FILE_VAL_DROP))
    qualifying = table[table.under_line & table.within_rule]
    if qualifying.empty:
        within = table[table.within_rule]
        smallest = within.loc[within.file_bytes.idxmin()] if not within.empty else None
        best = (f"; no setting is within {MAX_FILE_VAL_DROP} points" if smallest is None else
                f"; the smallest file within {MAX_FILE_VAL_DROP} points is {smallest['name']}, "
                f"{smallest.file_bytes:,} bytes ({FILE_RATIO * goal_bytes / smallest.file_bytes:.0f}x, "
                f"{smallest.val_change:+.2f} points)")
        return table, None, (f"no setting of {len(table)} is both at most {math.floor(goal_bytes):,} bytes "
                             f"and within {MAX_FILE_VAL_DROP} points of validation accuracy: "
                             f"{FILE_RATIO}x is not reached{best}")
    chosen = qualifying.loc[qualifying.file_bytes.idxmin()]
    return table, chosen, (f"chosen on validation: {chosen['name']}, {chosen.file_bytes:,} bytes "
                           f"({chosen.val_change:+.2f} points); {next_stage}")


def files_hold(records: pd.DataFrame, goal_bytes: float) -> tuple[pd.DataFrame, stats.Comparison, str]:
    """The third round's stage D (docs/headline-search.md): the chosen setting's files on three
    seeds, their test accuracy opened once (`deep-compression unseal`). FILE_RATIO x holds if every
    file is at most `goal_bytes` and the 95% interval of the paired test change (file against its
    uncompressed run) lies at or above -MAX_FILE_VAL_DROP points. Returns the files, the paired
    comparison and the verdict in words."""
    files = records.assign(change_points=100 * (records.test_acc - records.uncompressed_test_acc),
                           under_line=records.file_bytes <= math.floor(goal_bytes))
    change = stats.paired(files.change_points / 100, "test change of the compressed files")
    all_under = bool(files.under_line.all())
    low = 100 * change.low
    size = (f"{len(files)} files of {files.file_bytes.min():,}-{files.file_bytes.max():,} bytes "
            f"({math.floor(FILE_RATIO * goal_bytes / files.file_bytes.max())}x or more), "
            + ("all" if all_under else "not all") + f" at most {math.floor(goal_bytes):,}")
    if not all_under:
        verdict = f"{size}: {FILE_RATIO}x does not hold"
    elif low >= -MAX_FILE_VAL_DROP:
        verdict = (f"{size}; test change {100 * change.diff:+.2f} points, 95% CI [{low:+.2f}, "
                   f"{100 * change.high:+.2f}], at or above -{MAX_FILE_VAL_DROP}: {FILE_RATIO}x holds")
    else:
        verdict = (f"{size}; test change {100 * change.diff:+.2f} points, 95% CI [{low:+.2f}, "
                   f"{100 * change.high:+.2f}], reaching below -{MAX_FILE_VAL_DROP}: "
                   f"{FILE_RATIO}x within {MAX_FILE_VAL_DROP} points is not shown")
    return files, change, verdict

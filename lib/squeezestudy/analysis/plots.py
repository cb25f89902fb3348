"""Seaborn figures for the notebooks: samples, curves, confusion matrices, comparisons.

Every figure is drawn in the study's style (seaborn's whitegrid style, notebook context and
deep palette), applied only while it is drawn: importing this module changes no global setting.
`style()` gives the same look to a figure of your own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import ParamSpec

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from squeezestudy.core import fileio
from squeezestudy.data.fashion_mnist import CLASSES

P = ParamSpec("P")


@contextmanager
def style() -> Iterator[None]:
    """The study's look for the `with` block, as `sns.set_theme(style="whitegrid",
    context="notebook")` would set it globally. Only the settings it makes are restored on
    exit (not all rcParams, as `matplotlib.rc_context` does): the first figure of a Jupyter
    kernel switches interactive mode on, and that must outlast the block, or the inline
    backend stops showing figures."""
    rc = {**sns.plotting_context("notebook"),
          **sns.axes_style("whitegrid", rc={"font.family": "sans-serif"}),
          "axes.prop_cycle": mpl.cycler(color=sns.color_palette("deep"))}
    saved = {key: mpl.rcParams[key] for key in rc}
    mpl.rcParams.update(rc)
    try:
        yield
    finally:
        mpl.rcParams.update(saved)


class _InStyle:
    """`fig.<name>(...)` run inside `style()`; an object rather than a closure, so that the
    figure still pickles."""

    def __init__(self, fig: plt.Figure, name: str) -> None:
        self.fig, self.name = fig, name

    def __call__(self, *args, **kwargs):
        with style():
            return getattr(type(self.fig), self.name)(self.fig, *args, **kwargs)


def styled(draw: Callable[P, plt.Figure]) -> Callable[P, plt.Figure]:
    """Build (and save) the figure inside `style()`, and render it there later too: matplotlib
    reads some settings only when a figure is rendered (the tick labels' size decides how many
    ticks fit; the font list picks the font), so the figure's own `draw` and `get_tightbbox`
    (a notebook's inline display, a later savefig) also run inside `style()`."""
    @functools.wraps(draw)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> plt.Figure:
        with style():
            fig = draw(*args, **kwargs)
        for name in ("draw", "get_tightbbox"):
            setattr(fig, name, _InStyle(fig, name))
        return fig
    return wrapper


def save(fig: plt.Figure, path: str | Path | None) -> plt.Figure:
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = path.suffix.lstrip(".") or "png"
        fileio.write_with(path, lambda f: fig.savefig(f, format=fmt, dpi=110, bbox_inches="tight"))
    return fig


@styled
def image_grid(images: torch.Tensor, titles: Sequence[str] | None = None, ncols: int = 10,
               size: float = 1.2, title_size: float = 10, path: str | Path | None = None) -> plt.Figure:
    """uint8 [N, 28, 28] images in a grid, optional title per image (room is left for
    titles of up to two lines at `title_size` points)."""
    n = len(images)
    nrows = max(1, -(-n // ncols))
    title_inches = 2.6 * title_size / 72 if titles is not None else 0
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * (size + title_inches)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:n]):
        ax.imshow(images[i].numpy(), cmap="gray_r", vmin=0, vmax=255)
        if titles is not None:
            ax.set_title(titles[i], fontsize=title_size)
    fig.tight_layout()
    return save(fig, path)


@styled
def samples_per_class(images: torch.Tensor, labels: torch.Tensor, per_class: int = 8,
                      path: str | Path | None = None) -> plt.Figure:
    """A grid with one row per class: the first `per_class` images of each."""
    rows = [images[labels == c][:per_class] for c in range(len(CLASSES))]
    fig, axes = plt.subplots(len(CLASSES), per_class, figsize=(per_class * 1.0, len(CLASSES) * 1.05))
    for c, row in enumerate(rows):
        for j in range(per_class):
            ax = axes[c, j]
            ax.imshow(row[j].numpy(), cmap="gray_r", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(CLASSES[c], rotation=0, ha="right", va="center", fontsize=9)
    fig.tight_layout()
    return save(fig, path)


@styled
def training_curves(history: pd.DataFrame, hue: str | None = None, title: str | None = None,
                    path: str | Path | None = None) -> plt.Figure:
    """Loss, train accuracy and test accuracy per epoch (the note's three panels; validation
    accuracy for a sealed run, which has no test column). With `hue`, one line per value of that
    column (mean and spread over seeds)."""
    panels = [("train_loss", "train loss"), ("train_acc", "train accuracy"),
              ("test_acc", "test accuracy") if "test_acc" in history else ("val_acc", "validation accuracy")]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for ax, (column, label) in zip(axes, panels, strict=True):
        sns.lineplot(data=history, x="epoch", y=column, hue=hue, ax=ax, marker="o", markersize=3,
                     errorbar=("pi", 100) if hue else None, legend=ax is axes[-1])
        ax.set_title(label)
        ax.set_ylabel("")
    if hue:
        sns.move_legend(axes[-1], "lower right", title=None)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


@styled
def confusion_heatmap(cm: torch.Tensor, title: str = "", normalise: bool = True,
                      path: str | Path | None = None) -> plt.Figure:
    values = cm.float() / cm.sum(1, keepdim=True).clamp(min=1) if normalise else cm
    fig, ax = plt.subplots(figsize=(7.5, 6.2))
    sns.heatmap(pd.DataFrame(values.numpy(), index=CLASSES, columns=CLASSES), annot=True,
                fmt=".2f" if normalise else "d", cmap="Blues", cbar=False, ax=ax,
                annot_kws={"fontsize": 7})
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or ("confusion matrix (rows sum to 1)" if normalise else "confusion matrix"))
    fig.tight_layout()
    return save(fig, path)


@styled
def accuracy_vs_params(table: pd.DataFrame, x: str = "params", y: str = "test_acc",
                       hue: str = "model", path: str | Path | None = None,
                       title: str = "test accuracy against parameters") -> plt.Figure:
    """One point per run, log x axis."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.scatterplot(data=table, x=x, y=y, hue=hue, s=70, ax=ax)
    means = table.groupby(hue)[[x, y]].mean()
    for name, row in means.iterrows():
        ax.annotate(str(name), (row[x], row[y]), textcoords="offset points", xytext=(6, 6),
                    fontsize=9)
    ax.set_xscale("log")
    ax.set_title(title)
    fig.tight_layout()
    return save(fig, path)


@styled
def pixel_histogram(images: torch.Tensor, labels: torch.Tensor,
                    path: str | Path | None = None) -> plt.Figure:
    """Per-class mean intensity distributions."""
    frame = pd.DataFrame({"mean pixel": images.float().mean((1, 2)).numpy() / 255,
                          "class": np.array(CLASSES)[labels.numpy()]})
    fig, ax = plt.subplots(figsize=(9, 4))
    sns.boxplot(data=frame, x="class", y="mean pixel", order=list(CLASSES), ax=ax, fliersize=1)
    ax.tick_params(axis="x", rotation=30)
    ax.set_title("mean pixel value per image, by class")
    fig.tight_layout()
    return save(fig, path)


@styled
def design_sweeps(panels: Sequence[tuple[pd.DataFrame, str, str]], y: str = "test_acc",
                  path: str | Path | None = None) -> plt.Figure:
    """The paper's Figure 3 layout: per panel, accuracy against model size (MB, fp32), one
    point per seed and the mean with its standard deviation. Each panel is (runs, the
    swept column, a title); points are labelled with the swept value."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.2), squeeze=False)
    for ax, (runs, column, title) in zip(axes[0], panels, strict=True):
        sns.lineplot(data=runs, x="size_MB", y=y, errorbar="sd", err_style="bars", marker="o",
                     ax=ax, color="tab:blue")
        sns.scatterplot(data=runs, x="size_MB", y=y, ax=ax, color="tab:gray", alpha=0.5, s=20)
        means = runs.groupby(column)[["size_MB", y]].mean()
        for value, row in means.iterrows():
            ax.annotate(f"{column} {value:g}", (row.size_MB, row[y]), textcoords="offset points",
                        xytext=(4, -12), fontsize=8)
        ax.set_xlabel("model size, MB (fp32)")
        ax.set_ylabel(y.replace("_", " "))
        ax.set_title(title)
    fig.tight_layout()
    return save(fig, path)


@styled
def train_test_gap(history: pd.DataFrame, hue: str, path: str | Path | None = None,
                   title: str | None = None) -> plt.Figure:
    """Per epoch: training accuracy (during the epoch) and test accuracy, one colour per `hue`
    value, mean and spread over seeds; right panel: their difference in points."""
    long = history.melt(id_vars=["epoch", hue, "seed"], value_vars=["train_acc", "test_acc"],
                        var_name="split", value_name="accuracy")
    gap = history.assign(gap_points=100 * (history.train_acc - history.test_acc))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    sns.lineplot(data=long, x="epoch", y="accuracy", hue=hue, style="split", errorbar=("pi", 100),
                 ax=axes[0])
    axes[0].set_title("train (solid) and test (dashed) accuracy")
    sns.lineplot(data=gap, x="epoch", y="gap_points", hue=hue, errorbar=("pi", 100), ax=axes[1],
                 legend=False)
    axes[1].axhline(0, color="black", lw=0.8)
    axes[1].set_title("train - test accuracy, points")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


@styled
def loss_curves(history: pd.DataFrame, hue: str, path: str | Path | None = None) -> plt.Figure:
    """Validation and test loss per epoch (mean over seeds, band: range): where accuracy stays
    flat, a rising loss shows a network growing over-confident on what it gets wrong."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for ax, column in zip(axes, ("val_loss", "test_loss"), strict=True):
        sns.lineplot(data=history, x="epoch", y=column, hue=hue, ax=ax, marker="o", markersize=3,
                     errorbar=("pi", 100), legend=ax is axes[-1])
        ax.set_title(column.replace("_", " "))
        ax.set_ylabel("cross-entropy")
    sns.move_legend(axes[-1], "upper right", title=None)
    fig.tight_layout()
    return save(fig, path)


@styled
def headline(points: pd.DataFrame, files: pd.DataFrame, alexnet: tuple[float, float],
             budget: int, size_limit: int, target: float,
             path: str | Path | None = None) -> plt.Figure:
    """The paper's headline at this scale: every setting's test accuracy (mean, bar: std over
    seeds) against parameters (left) and against file size (right: fp32 weights, and the
    compressed files), AlexNet-112's band (mean ± std), the accuracy target, the 1/50 parameter
    budget and the 0.5 MB line."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    mean, std = alexnet
    families = list(dict.fromkeys(points.family))
    palette = dict(zip(families, sns.color_palette("deep", len(families)), strict=True))
    for ax, x, limit, label in ((axes[0], "params", budget, f"1/50 of AlexNet-112 ({budget:,})"),
                                (axes[1], "fp32_bytes", size_limit, f"{size_limit / 1e6:g} MB")):
        ax.axhspan(mean - std, mean + std, color="0.85", zorder=0, label="AlexNet-112, mean ± std")
        ax.axhline(target, color="0.3", ls="--", lw=1, label=f"target {target:.1%}")
        ax.axvline(limit, color="firebrick", ls=":", lw=1.5, label=label)
        for name, group in points.groupby("family", sort=False):
            ax.errorbar(group[x], group.test_acc_mean, yerr=group.test_acc_std.fillna(0), fmt="o",
                        ms=5, capsize=2, color=palette[name], label=name)
        ax.set_xscale("log")
    if not files.empty:
        axes[1].scatter(files.file_bytes, files.test_acc, marker="D", s=40, color="black",
                        label="int8 and Deep Compression files (one seed)", zorder=3)
    axes[0].set(xlabel="parameters", ylabel="test accuracy", title="accuracy against parameters")
    axes[1].set(xlabel="file bytes (fp32 weights; compressed files as saved)",
                title="accuracy against file size")
    for ax in axes:
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save(fig, path)


@styled
def sensitivity(scan: pd.DataFrame, shares: dict[str, float] | None = None,
                path: str | Path | None = None) -> plt.Figure:
    """Han et al.'s sensitivity scan as a heatmap: each layer (rows, in the network's order, with
    its weight count) pruned alone to each share kept (columns), the validation accuracy lost in
    points, no retraining. `shares`: the allocation's share per layer, outlined."""
    order = list(dict.fromkeys(scan.layer))
    grid = scan.pivot(index="layer", columns="density", values="drop_points").loc[order]
    weights = scan.drop_duplicates("layer").set_index("layer").weights.loc[order]
    grid.index = [f"{name.removeprefix('features.').replace('.fire.', '.').removesuffix('.weight')} "
                  f"({weights[name]:,})" for name in order]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(order) + 1.5))
    labels = grid.round(1) + 0.0  # + 0.0: no "-0"
    sns.heatmap(grid.clip(lower=0), ax=ax, cmap="rocket_r", vmin=0, vmax=3, annot=labels, fmt="g",
                annot_kws={"size": 7}, cbar_kws={"label": "validation points lost (3 or more)"})
    ax.set_xticklabels([f"{float(t.get_text()):.0%}" for t in ax.get_xticklabels()])
    if shares:
        columns = list(grid.columns)
        for row, name in enumerate(order):
            if shares[name] in columns:
                ax.add_patch(plt.Rectangle((columns.index(shares[name]), row), 1, 1, fill=False,
                                           edgecolor="deepskyblue", lw=2))
    ax.set(xlabel="share of the layer's weights kept (that layer alone)", ylabel="",
           title="which layers can lose weights: the sensitivity scan")
    fig.tight_layout()
    return save(fig, path)

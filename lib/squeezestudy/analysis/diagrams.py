"""The study note's pictures, drawn from the networks themselves: the Fire module with its channel
counts, SqueezeNet v1.0's macro-architecture with simple and complex bypass (the paper's Figure 2),
and the parameter arithmetic of the three design strategies. Every number on them is read from a
built module, not typed in."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.ticker import FuncFormatter
from torch import nn

from squeezestudy.analysis.plots import save, styled
from squeezestudy.models.summary import count_parameters

SQUEEZE, EXPAND, CONCAT, PLAIN = "#8fb8de", "#f2b880", "#b8d8a8", "#dddddd"


def _box(ax, x: float, y: float, w: float, h: float, text: str, color: str, size: float = 9) -> None:
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=color, edgecolor="#333333", linewidth=1))
    ax.text(x, y, text, ha="center", va="center", fontsize=size)


def _arrow(ax, start: tuple[float, float], end: tuple[float, float], text: str = "", rad: float = 0.0,
           color: str = "#333333", style: str = "-|>") -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=12, color=color, linewidth=1.2,
                                 connectionstyle=f"arc3,rad={rad}"))
    if text:
        ax.text((start[0] + end[0]) / 2 + 0.08, (start[1] + end[1]) / 2, text, fontsize=8, va="center",
                color="#333333")


@styled
def fire_module(fire: nn.Module, in_channels: int, size: int, path: str | Path | None = None) -> plt.Figure:
    """A Fire module (squeeze 1x1, expand 1x1 and 3x3, concatenation) with the channel counts and
    parameters of `fire`, for an input of `in_channels` x `size` x `size`."""
    s = fire.squeeze.out_channels
    e1, e3 = fire.expand1x1.out_channels, fire.expand3x3.out_channels
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    _box(ax, 0, 4, 3.2, 0.6, f"input  {size}x{size}x{in_channels}", PLAIN)
    def layer(kind: str, n: int, k: int, conv: nn.Module) -> str:
        return f"{kind}: {n} filters {k}x{k} + ReLU\n{count_parameters(conv):,} parameters"

    _box(ax, 0, 2.8, 3.2, 0.7, layer("squeeze", s, 1, fire.squeeze), SQUEEZE)
    _box(ax, -1.7, 1.4, 3.0, 0.7, layer("expand", e1, 1, fire.expand1x1), EXPAND)
    _box(ax, 1.7, 1.4, 3.0, 0.7, layer("expand", e3, 3, fire.expand3x3), EXPAND)
    _box(ax, 0, 0, 3.6, 0.6, f"concatenate: {size}x{size}x{e1 + e3}", CONCAT)
    _arrow(ax, (0, 3.7), (0, 3.15), f"{in_channels} channels")
    _arrow(ax, (-0.4, 2.45), (-1.5, 1.75), f"{s}")
    _arrow(ax, (0.4, 2.45), (1.5, 1.75), f"{s}")
    _arrow(ax, (-1.5, 1.05), (-0.5, 0.3), f"{e1}")
    _arrow(ax, (1.5, 1.05), (0.5, 0.3), f"{e3}")
    ax.set_xlim(-3.6, 3.6)
    ax.set_ylim(-0.5, 4.5)
    ax.axis("off")
    ax.set_title(f"Fire module: {count_parameters(fire):,} parameters, {in_channels} channels in, "
                 f"{e1 + e3} out")
    return save(fig, path)


def _stages(model: nn.Module) -> list[str]:
    """The named stages of a SqueezeNet's `features`, then its classifier's conv, in order."""
    names: list[str] = []
    for child in model.features:
        kind = type(child).__name__
        if kind == "Fire":
            names.append(f"fire{sum(n.startswith('fire') for n in names) + 2}")
        elif kind == "Conv2d":
            names.append("conv1")
        elif kind == "MaxPool2d":  # named after the layer it follows, as the paper does
            names.append(f"maxpool/2 after {names[-1]}")
    return names + ["conv10", "global avgpool", "softmax"]


@styled
def macro_architecture(model: nn.Module, path: str | Path | None = None) -> plt.Figure:
    """SqueezeNet v1.0's layers as a column, three times: no bypass, simple bypass (identity around
    fire3, 5, 7, 9: the modules whose input and output channels match) and complex bypass (also a
    1x1 convolution around fire2, 4, 6, 8), as the paper's Figure 2 draws them. The layer order and
    each Fire module's output channels come from `model` (v1.0 built by `models.build`)."""
    stages = _stages(model)
    fires = [m for m in model.features if type(m).__name__ == "Fire"]
    out_ch = {f"fire{i + 2}": f.out_channels for i, f in enumerate(fires)}
    in_ch = {f"fire{i + 2}": f.squeeze.in_channels for i, f in enumerate(fires)}
    fig, axes = plt.subplots(1, 3, figsize=(11, 7.4))
    titles = ("no bypass", "simple bypass", "complex bypass")
    for ax, title in zip(axes, titles, strict=True):
        ys = {name: len(stages) - i for i, name in enumerate(stages)}
        for name, y in ys.items():
            color = EXPAND if name.startswith("fire") else (PLAIN if "pool" in name or name == "softmax"
                                                            else SQUEEZE)
            label = f"{name} ({out_ch[name]})" if name in out_ch else name
            _box(ax, 0, y, 2.1, 0.62, label, color, size=8)
        order = list(ys)
        for a, b in zip(order, order[1:], strict=False):
            _arrow(ax, (0, ys[a] - 0.31), (0, ys[b] + 0.31))
        if title != "no bypass":
            for name in out_ch:
                same = in_ch[name] == out_ch[name]
                if same or title == "complex bypass":
                    y = ys[name]
                    start, end = (1.1, y + 0.5), (1.1, y - 0.5)
                    _arrow(ax, start, end, rad=-0.8, color="#c0392b" if same else "#2c7fb8")
                    if not same:
                        ax.text(1.55, y, "1x1 conv", fontsize=7, color="#2c7fb8", va="center")
        ax.set_xlim(-1.3, 2.1)
        ax.set_ylim(0.3, len(stages) + 0.8)
        ax.axis("off")
        ax.set_title(title)
    fig.suptitle("SqueezeNet v1.0 (output channels in brackets); red: identity bypass, blue: 1x1 conv "
                 "bypass", fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def strategy_parameters(in_channels: int = 96, filters: int = 128, squeeze: int = 16) -> pd.DataFrame:
    """The parameters of one layer of `filters` outputs over `in_channels`, as each strategy shapes
    it: all 3x3 filters; half of them 1x1 (strategy 1); a squeeze layer of `squeeze` 1x1 filters
    in front (strategy 2); both, which is the Fire module. Counted on built layers (no biases)."""
    half = filters // 2

    def conv(cin: int, cout: int, k: int) -> nn.Module:
        return nn.Conv2d(cin, cout, k, bias=False)

    layers = {
        "all 3x3": [conv(in_channels, filters, 3)],
        "half 1x1 (strategy 1)": [conv(in_channels, half, 1), conv(in_channels, half, 3)],
        "squeeze first (strategy 2)": [conv(in_channels, squeeze, 1), conv(squeeze, filters, 3)],
        "Fire module (1 and 2)": [conv(in_channels, squeeze, 1), conv(squeeze, half, 1),
                                  conv(squeeze, half, 3)],
    }
    return pd.DataFrame({"layer": list(layers),
                         "parameters": [sum(count_parameters(m) for m in ms) for ms in layers.values()]})


@styled
def strategies_chart(table: pd.DataFrame, title: str, path: str | Path | None = None) -> plt.Figure:
    """Bars of `strategy_parameters`, each labelled with its count and its ratio to all 3x3."""
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    sns.barplot(data=table, y="layer", x="parameters", ax=ax, color=EXPAND, orient="h")
    base = table.parameters.iloc[0]
    for i, n in enumerate(table.parameters):
        ax.text(n, i, f"  {n:,} ({base / n:.1f}x fewer)" if i else f"  {n:,}", va="center", fontsize=9)
    ax.set_xlim(0, base * 1.45)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:.0f}k"))
    ax.set_ylabel("")
    ax.set_title(title)
    fig.tight_layout()
    return save(fig, path)

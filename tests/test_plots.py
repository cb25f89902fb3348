"""plots styles only its own figures: importing it or drawing with it changes no global setting."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd


def test_importing_plots_leaves_rcparams_alone():
    code = ("import matplotlib\n"
            "before = dict(matplotlib.rcParams)\n"
            "import squeezestudy.analysis.plots\n"
            "changed = sorted(k for k, v in matplotlib.rcParams.items() if before[k] != v)\n"
            "assert not changed, changed\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_figures_keep_the_study_style_without_leaking_it():
    from squeezestudy.analysis import plots

    before = dict(matplotlib.rcParams)
    history = pd.DataFrame({"epoch": [1, 2, 3, 4, 5], "train_loss": [1.0, 0.8, 0.6, 0.5, 0.4],
                            "train_acc": [0.5, 0.6, 0.7, 0.75, 0.8],
                            "test_acc": [0.5, 0.55, 0.6, 0.62, 0.63]})
    fig = plots.training_curves(history)
    assert dict(matplotlib.rcParams) == before
    with plots.style():
        facecolor = matplotlib.rcParams["axes.facecolor"]
        assert matplotlib.rcParams["axes.grid"]  # whitegrid
    ax = fig.axes[0]
    assert ax.get_facecolor() == matplotlib.colors.to_rgba(facecolor)
    # matplotlib lays ticks out when it renders (how many fit depends on the labels' size):
    # rendered later, out of any style, the figure still looks as it does in the study's style
    later, in_style = io.BytesIO(), io.BytesIO()
    fig.savefig(later, format="png", dpi=50, bbox_inches="tight")
    with plots.style():
        fig.savefig(in_style, format="png", dpi=50, bbox_inches="tight")
    assert later.getvalue() == in_style.getvalue()
    assert dict(matplotlib.rcParams) == before
    pickle.loads(pickle.dumps(fig))
    plt.close(fig)


def test_style_restores_only_its_own_settings():
    """A Jupyter kernel's first figure switches interactive mode on; if leaving the style undid
    that, the inline backend would show no later figure."""
    from squeezestudy.analysis import plots

    before = matplotlib.is_interactive()
    try:
        with plots.style():
            matplotlib.interactive(not before)
        assert matplotlib.is_interactive() == (not before)
    finally:
        matplotlib.interactive(before)


def test_the_sensitivity_heatmap_outlines_the_allocation(tmp_path):
    from squeezestudy.analysis import plots

    scan = pd.DataFrame([{"layer": f"features.fire{i}.squeeze.weight", "weights": 100 * i, "density": d,
                          "drop_points": (5 - i) * (1 - d)} for i in (2, 3) for d in (0.5, 0.9)])
    shares = {"features.fire2.squeeze.weight": 0.9, "features.fire3.squeeze.weight": 0.5}
    fig = plots.sensitivity(scan, shares, path=tmp_path / "scan.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["fire2.squeeze (200)", "fire3.squeeze (300)"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["50%", "90%"]
    outlined = sorted(p.get_xy() for p in ax.patches if isinstance(p, matplotlib.patches.Rectangle)
                      and not p.get_fill())
    assert outlined == [(0, 1), (1, 0)]  # fire2 at 90% (column 1, row 0), fire3 at 50%
    assert (tmp_path / "scan.png").stat().st_size > 0
    plt.close(fig)

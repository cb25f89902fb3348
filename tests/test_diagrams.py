"""The note's pictures drawn from code (notebooks 01-03): the numbers on them are the modules'."""

import matplotlib

matplotlib.use("Agg")

from squeezestudy import models  # noqa: E402
from squeezestudy.analysis import diagrams
from squeezestudy.models import Fire  # noqa: E402


def texts(fig) -> str:
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts + [ax.title])


def test_the_strategies_arithmetic_is_the_layers_own():
    table = diagrams.strategy_parameters(96, 128, 16).set_index("layer").parameters
    assert table["all 3x3"] == 96 * 128 * 9
    assert table["half 1x1 (strategy 1)"] == 96 * 64 + 96 * 64 * 9
    assert table["squeeze first (strategy 2)"] == 96 * 16 + 16 * 128 * 9
    assert table["Fire module (1 and 2)"] == 96 * 16 + 16 * 64 + 16 * 64 * 9
    fig = diagrams.strategies_chart(table.reset_index(), "t")
    assert "9.4x fewer" in texts(fig)


def test_the_fire_module_shows_its_channels_and_parameters():
    fig = diagrams.fire_module(Fire(96, 16, 64, 64), 96, 55)
    shown = texts(fig)
    assert "11,920 parameters" in shown and "55x55x128" in shown and "9,280 parameters" in shown


def test_the_macro_architecture_follows_the_built_network():
    fig = diagrams.macro_architecture(models.build("squeezenet1_0"))
    shown = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    for label in ("fire2 (128)", "fire9 (512)", "maxpool/2 after fire4", "maxpool/2 after fire8", "1x1 conv"):
        assert label in shown, label
    assert shown.count("1x1 conv") == 4  # around fire2, 4, 6, 8 in the complex panel only

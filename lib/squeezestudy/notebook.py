"""Glue for the notebooks: the smoke switch that CI sets, and where runs are written."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from squeezestudy.core.paths import RUNS_DIR, SMOKE_RUNS_DIR, smoke_mode  # noqa: F401 (notebooks import it from here)
from squeezestudy.training.config import TrainConfig

SMOKE_TRAIN_IMAGES = 2_000


def training_setup(config: TrainConfig, output_dir: str | None, run_name: str | None
                   ) -> tuple[TrainConfig, Path]:
    """The config to run and its run directory (output_dir/run_name, output_dir defaulting
    to outputs/runs), with the smoke switch applied."""
    name = run_name or f"{config.model}-s{config.seed}"
    if smoke_mode():
        config = dataclasses.replace(config, epochs=1, train_subset=SMOKE_TRAIN_IMAGES)
        return config, SMOKE_RUNS_DIR / name
    return config, (Path(output_dir) if output_dir else RUNS_DIR) / name


class DataNeeded(RuntimeError):
    """The notebook's data is not on this machine (the message says how to point at it)."""


def check_data(directory: str | None = None) -> None:
    """The first thing a notebook that reads Fashion-MNIST does: nothing (no output) when the data
    is there, a download where it is missing and the machine is online, and otherwise one message
    saying how to point the notebook at the files, before any other cell fails on them."""
    from squeezestudy.data import fashion_mnist as data

    try:
        data.locate(directory, download=True)
    except data.DataNotFoundError as err:
        raise DataNeeded(
            "This notebook reads Fashion-MNIST, and it is not on this machine yet.\n"
            f"  In a cell: %env {data.ENV_VAR}=/path/to/dir  (the folder of the four IDX files), then "
            "run the notebook again;\n"
            f"  or put the files in {data.RAW_DIR}, or run on a machine with internet (it downloads).\n"
            f"What was looked at: {err}") from None

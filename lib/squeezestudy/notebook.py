"""Glue for the notebooks: the smoke switch that CI sets, and where runs are written."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from .paths import RUNS_DIR, SMOKE_ENV, SMOKE_RUNS_DIR
from .train import TrainConfig

SMOKE_TRAIN_IMAGES = 2_000


def smoke_mode() -> bool:
    """True when $SQUEEZESTUDY_SMOKE is set to 1 (CI's nbval run): notebooks then train
    1 epoch on 2,000 images and write under outputs/smoke/, leaving full results alone."""
    return os.environ.get(SMOKE_ENV, "") not in ("", "0", "false")


def training_setup(config: TrainConfig, output_dir: str | None, run_name: str | None
                   ) -> tuple[TrainConfig, Path]:
    """The config to run and its run directory (output_dir/run_name, output_dir defaulting
    to outputs/runs), with the smoke switch applied."""
    name = run_name or f"{config.model}-s{config.seed}"
    if smoke_mode():
        config = dataclasses.replace(config, epochs=1, train_subset=SMOKE_TRAIN_IMAGES)
        return config, SMOKE_RUNS_DIR / name
    return config, (Path(output_dir) if output_dir else RUNS_DIR) / name

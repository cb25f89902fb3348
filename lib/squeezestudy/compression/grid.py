"""The Deep Compression grids behind notebooks 11 and 12, as a command of the package:

    squeezestudy deep-compression one-fire      # squeezenet_fmnist-s0 (notebook 11): 2 + 1 epochs
    squeezestudy deep-compression headline      # headline-b96-s0, the plain recipe: 2 + 1 epochs
    squeezestudy deep-compression run RUN       # seed 0 of the recipe notebook 12 chose: 4 + 1
                                                # epochs, with the run's augmentation and smoothing
    squeezestudy deep-compression long RUN      # the same run just under the 500x line (47% and
                                                # 45% kept, 6-bit) with 12 + 2 epochs of retraining
    squeezestudy deep-compression 500x RUN      # 5- and 4-bit codebooks at 55-70% kept, 4 + 1
                                                # epochs, sealed (docs/headline-search.md)
    ... --only KEPT,BITS                        # one setting of the grid (e.g. 0.6,5 for seeds 1-2)

Each recipe (share of weights kept, bits) is applied to a trained model's fp32 weights, then
retrained after pruning and after weight sharing (AdamW, lr 1e-4), and recorded from the file
read back (outputs/deep_compression/<name>.json and .sqdc; `deep_compression.compress_run`). The
recipes run in two lanes at a time, one thread each; each lane's log is appended to
outputs/logs/deep-compression-<source>.log.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from squeezestudy.core.paths import OUTPUTS, RUNS_DIR, WEIGHTS_DIR

OUT_DIR = OUTPUTS / "deep_compression"
LOG_DIR = OUTPUTS / "logs"
Recipe = tuple[float, int]  # (share of weights kept, bits)


@dataclass(frozen=True)
class Grid:
    lanes: tuple[tuple[Recipe, ...], ...]
    prune_epochs: int
    share_epochs: int
    needs_run: bool = True  # a run name follows the grid's name
    sealed: bool = False  # a search on validation: no test accuracy computed


GRIDS = {
    "one-fire": Grid((((1.0, 8), (1.0, 6), (0.7, 6)), ((0.7, 8), (0.5, 8))), 2, 1, needs_run=False),
    "headline": Grid((((1.0, 6), (0.5, 6)), ((1.0, 8), (0.7, 6))), 2, 1, needs_run=False),
    "run": Grid((((1.0, 8), (1.0, 6), (0.7, 6)), ((0.5, 6), (0.4, 6), (0.6, 6))), 4, 1),
    "long": Grid((((0.47, 6),), ((0.45, 6),)), 12, 2),
    "500x": Grid((((0.6, 5), (0.7, 4)), ((0.55, 5), (0.65, 4))), 4, 1, sealed=True),
}


@dataclass(frozen=True)
class Source:
    """The weights a grid compresses, with the model and the regularisation of their recipe."""

    weights: str
    model: str
    model_kwargs: dict
    augment: bool
    label_smoothing: float
    log: str


def source(grid: str, run: str | None = None) -> Source:
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; use one of {', '.join(GRIDS)}")
    if GRIDS[grid].needs_run and not run:
        raise ValueError(f"the {grid!r} grid compresses a finished run: name it, e.g. "
                         f"`squeezestudy deep-compression {grid} headline-b96aug60-s0`")
    if grid == "one-fire":
        return Source(str(OUTPUTS / "compression" / "squeezenet_fmnist-s0-fp32.pt"), "squeezenet_fmnist", {},
                      False, 0.0, "squeezenet_fmnist")
    run = run or "headline-b96-s0"
    from squeezestudy.training.rundir import read_metrics

    config = read_metrics(RUNS_DIR / run / "metrics.json")["config"]
    weights = WEIGHTS_DIR / f"{run}.pt"
    if not weights.is_file():
        from squeezestudy.runs.weights import export

        export(run)
    return Source(str(weights), config["model"], config["model_kwargs"], bool(config["augment"]),
                  float(config["label_smoothing"]), run)


def _lane(source: Source, recipes: tuple[Recipe, ...], prune_epochs: int, share_epochs: int,
          out_dir: str, log_file: str, sealed: bool = False) -> list[str]:
    """One lane of recipes, one after the other, on one thread; returns the names recorded."""
    import torch

    from squeezestudy.compression import deep_compression

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    names = []
    try:
        with open(log_file, "a") as log:
            for density, bits in recipes:
                record = deep_compression.compress_run(
                    source.weights, source.model, source.model_kwargs, density, bits, out_dir,
                    prune_epochs=prune_epochs, share_epochs=share_epochs, lr=1e-4, augment=source.augment,
                    label_smoothing=source.label_smoothing, sealed=sealed,
                    log=lambda line: print(line, file=log, flush=True))
                print(json.dumps({k: record[k] for k in ("name", "file_bytes", "val_acc")}), file=log,
                      flush=True)
                names.append(record["name"])
    finally:  # a lane run in the caller's process (jobs=1) leaves its threads as they were
        torch.set_num_threads(threads)
    return names


def parse_setting(text: str) -> Recipe:
    """`0.6,5` -> (0.6, 5): a share of weights kept in (0, 1] and a codebook of 1-8 bits."""
    try:
        kept, bits = text.split(",")
        recipe = (float(kept), int(bits))
    except ValueError:
        raise ValueError(f"--only takes KEPT,BITS such as 0.6,5; got {text!r}") from None
    if not (0 < recipe[0] <= 1 and 1 <= recipe[1] <= 8):
        raise ValueError(f"--only {text}: the share kept must be in (0, 1] and the bits 1-8")
    return recipe


def run_grid(grid: str, run: str | None = None, jobs: int = 2, out_dir: str | Path = OUT_DIR,
             log_dir: str | Path = LOG_DIR, echo=print, only: Recipe | None = None) -> list[str]:
    """Compress with every recipe of `grid` (or the one setting `only`, which must be one of the
    grid's); `jobs` lanes at a time (1: in this process)."""
    spec, src = GRIDS.get(grid), source(grid, run)
    lanes = spec.lanes
    if only is not None:
        if not any(only == recipe for lane in spec.lanes for recipe in lane):
            raise ValueError(f"--only {only[0]:g},{only[1]} is not a setting of the {grid!r} grid: "
                             + ", ".join(f"{k:g},{b}" for lane in spec.lanes for k, b in lane))
        lanes = ((only,),)
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    log_file = str(Path(log_dir) / f"deep-compression-{src.log}.log")
    args = [(src, lane, spec.prune_epochs, spec.share_epochs, str(out_dir), log_file, spec.sealed)
            for lane in lanes]
    echo(f"{grid}: {sum(len(lane) for lane in lanes)} recipes of {src.weights} in {len(args)} lanes, "
         f"{spec.prune_epochs} + {spec.share_epochs} epochs of retraining; log: {log_file}")
    names = run_lanes(_lane, args, jobs)
    echo(f"recorded: {', '.join(names)}")
    return names


def run_lanes(lane, args: list[tuple], jobs: int) -> list[str]:
    """`lane(*a)` for each `a` of `args`, each returning the names it recorded: in this process
    one after the other (`jobs` 1), or `jobs` spawned processes at a time."""
    if jobs <= 1:
        return [n for a in args for n in lane(*a)]
    import multiprocessing

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return [n for names in pool.map(lane, *zip(*args, strict=True)) for n in names]

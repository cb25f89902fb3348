"""Per-machine defaults chosen by measurement.

`squeezestudy tune` times, for each model at its batch size, the settings `fit` may choose
when they are left to auto (precision where the device runs bf16 natively, channels_last,
micro-batch, threads), a couple of seconds each, by coordinate descent from the model's
static defaults (ModelSpec): the values of one setting are timed together, in interleaved
rounds, and one replaces the current value only when every one of its rounds beat every round
of the current one (a rank test at p = 0.05 with three rounds a side). The result is
cached per machine and model in
~/.cache/squeezestudy/tuning.json (or $SQUEEZESTUDY_TUNING). The cache key says what the
machine is: CPU model, instruction set, the threads torch may use, torch's version (or the GPU).
`fit` then uses the cached choice for every setting a config leaves to auto; without an entry
it uses the ModelSpec defaults. bf16 is only a candidate for a model whose bf16 accuracy was
checked against fp32 (`ModelSpec.bf16_checked`, notebook 06: within 0.3 points).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

from squeezestudy.analysis.stats import every_round_faster
from squeezestudy.core import fileio, machine
from squeezestudy.core.device import bf16_supported
from squeezestudy.models import spec
from squeezestudy.training.settings import (
    SETTINGS,
    Choice,
    cache_path,
    machine_key,
    model_key,
    read_cache,
    static_choice,
)

ROUNDS = 3  # interleaved rounds per group of settings
# What `make study` trains, and SqueezeNet v1.0 at 224 (the benchmark's fourth model).
DEFAULT_MODELS = ("squeezenet_fmnist", "lenet", "squeezenet_design", "alexnet", "squeezenet1_0")


def candidates_along(axis: str, current: Choice, model: str, device: torch.device,
                     batch_size: int) -> list[Choice]:
    """The values of one setting to try, the others held at `current`."""
    if axis == "precision":
        values = ["fp32"] + (["bf16"] if bf16_supported(device) and spec(model).bf16_checked else [])
    elif axis == "channels_last":
        values = [False] if device.type == "mps" else [True, False]
    elif axis == "micro_batch":
        values = [0] + ([m for m in (batch_size // 2, batch_size // 4) if m >= 8]
                        if device.type == "cpu" else [])
    else:
        cores = machine.current().threads
        values = sorted({cores, max(1, cores // 2), 1}) if device.type == "cpu" else [cores]
    return [dataclasses.replace(current, **{axis: v}) for v in values]


def measure(model: str, choices: list[Choice], dataset, device: torch.device, batch_size: int,
            seconds: float) -> list[list[float]]:
    """Training images/s of each choice in each round: each set up once and warmed up, then
    ROUNDS rounds of bursts of about seconds/ROUNDS in which every choice runs in turn
    (bench.interleaved_rates), so that a machine whose speed drifts meanwhile slows them alike."""
    from squeezestudy.speed.bench import Setting, interleaved_rates, project_timed

    timed = [project_timed(model, dataset, device,
                           Setting(c.precision, c.channels_last, batch_size, c.micro_batch,
                                   threads=c.threads), warmup=2)
             for c in choices]
    return interleaved_rates(timed, device, steps=1, repeats=ROUNDS, burst_seconds=seconds / ROUNDS)


def tune_model(model: str, dataset, device: torch.device, batch_size: int | None = None,
               seconds: float = 2.0, echo=print) -> dict:
    """Coordinate descent over SETTINGS from the static defaults, the values of one setting timed
    together; the fastest value (median of its rounds) replaces the current one only when every
    one of its rounds beat every round of the current one (stats.every_round_faster): on a noisy
    machine a gain within the scatter of the rounds keeps the current value. Returns the cache
    entry: the choice, and each group of settings timed together (`groups`, with every round),
    so that a comparison is only ever drawn between settings measured in the same rounds."""
    batch_size = batch_size or spec(model).batch_size
    current = default = static_choice(model, device)
    groups: list[dict] = []
    rate_of: dict[Choice, float] = {}  # each setting's latest measurement
    first_rate: dict[Choice, float] = {}  # and its first (the default's: against its challengers)

    def time_together(axis: str, choices: list[Choice]) -> dict[Choice, list[float]]:
        rounds = dict(zip(choices, measure(model, choices, dataset, device, batch_size, seconds),
                          strict=True))
        for choice, rates in rounds.items():
            rate = statistics.median(rates)
            echo(f"  {model:18s} {choice.label():58s} {rate:9,.0f} img/s "
                 f"(rounds {min(rates):,.0f}-{max(rates):,.0f})")
            rate_of[choice] = rate
            first_rate.setdefault(choice, rate)
        groups.append({"axis": axis, "current": dataclasses.asdict(current),
                       "rates": [{**dataclasses.asdict(c), "images_per_s": statistics.median(r),
                                  "rounds": r} for c, r in rounds.items()]})
        return rounds

    for axis in SETTINGS:
        candidates = candidates_along(axis, current, model, device, batch_size)
        if current not in candidates:
            candidates.insert(0, current)
        if len(candidates) > 1:
            rounds = time_together(axis, candidates)
            fastest = max(candidates, key=rate_of.__getitem__)
            if every_round_faster(rounds[fastest], rounds[current]):
                current = fastest
    missing = [c for c in dict.fromkeys([default, current]) if c not in rate_of]
    if missing:  # a device with a single value of every setting
        time_together("none", missing)
    return {"choice": dataclasses.asdict(current), "images_per_s": rate_of[current],
            "default": dataclasses.asdict(default), "default_images_per_s": first_rate[default],
            "rule": "every round faster", "groups": groups,
            "tuned_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def tune(models: list[str], device: torch.device, dataset, seconds: float = 2.0,
         path: Path | None = None, echo=print) -> dict:
    """Tune each model and write the results into the cache (other machines' entries kept)."""
    from squeezestudy.training.config import TrainConfig

    path = path or cache_path()
    key = machine_key(device)
    echo(f"tuning on {key}")
    results = {}
    for model in models:
        image_size = TrainConfig(model=model).resolved_image_size()
        batch_size = spec(model).batch_size
        results[model_key(model, batch_size, image_size)] = tune_model(model, dataset, device,
                                                                       batch_size, seconds, echo)
    cache = read_cache(path)
    cache.setdefault(key, {}).update(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_text(path, json.dumps(cache, indent=1, sort_keys=True) + "\n")
    return results

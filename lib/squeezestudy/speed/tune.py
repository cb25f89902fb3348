"""Per-machine defaults chosen by measurement.

`squeezestudy tune` times, for each model at its batch size, the settings `fit` may choose
when they are left to auto (precision where the device runs bf16 natively, channels_last,
micro-batch, threads), by coordinate descent from the model's static defaults
(training.settings.static_choice): the values of one setting are timed together, in interleaved
rounds, and one replaces the current value only when every one of its rounds beat every round of
the current one (a rank test at p = 0.05 with three rounds a side). A choice other than the static
default is then timed against it once more, in the same rounds, and kept only if it wins every
round again: that is the speed-up the pass reports.

It cannot be fooled by a busy machine: it refuses to start when other processes keep the CPU
busy (/proc/stat over a second), and refuses to cache a model whose default's rounds spread more than
MAX_SPREAD (the machine's speed moved while it measured); either way it says why in one line.
The pass has a time budget (BUDGET_S for the study's models), and with `pending_epochs` (what
`make study` is about to train) a model is tuned only where a tenth of its pending training time
(the most the measured defaults left on the table, docs/speed.md) exceeds what tuning it costs.

The result is cached per machine and model in ~/.cache/squeezestudy/tuning.json (or
$SQUEEZESTUDY_TUNING). The cache key says what the machine is: CPU model, instruction set, the
threads torch may use, torch's version (or the GPU). bf16 is only a candidate for a model whose
bf16 accuracy was checked against fp32 (`settings.bf16_allowed`).
"""

from __future__ import annotations

import dataclasses
import json
import os
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
    bf16_allowed,
    cache_path,
    machine_key,
    model_key,
    read_cache,
    static_choice,
)

ROUNDS = 3  # interleaved rounds per group of settings
# What `make study` trains: the models `tune` measures by default.
DEFAULT_MODELS = ("squeezenet_fmnist", "lenet", "squeezenet_design", "alexnet")
BUDGET_S = 120.0  # the whole pass, for DEFAULT_MODELS
MAX_LOAD = 0.5  # other processes keeping more than half a core busy: not quiet
# The default's rounds, highest over lowest, less one: their median over the groups above this
# means the speed moved while it was measured (quiet, this study's Zen 4 measured 5-31% in single
# groups of 0.5 s bursts, docs/speed.md).
MAX_SPREAD = 0.25
MAX_GAIN = 0.10  # the most tuning is expected to save of a training's time (docs/speed.md)
TRAIN_IMAGES = 55_000


class NotQuiet(RuntimeError):
    """The machine is too busy to measure on: nothing is cached."""


class CpuWatch:
    """The cores other processes keep busy from now on: the machine's busy time (/proc/stat) less
    this process's own CPU time (all its threads), over the time since it started watching. Where
    there is no /proc/stat: the 1-minute load average less this process's share."""

    def __init__(self) -> None:
        self.start, self.machine, self.own = time.monotonic(), self._busy(), self._own()

    @staticmethod
    def _busy() -> float | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
            return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # less idle, iowait
        except (OSError, ValueError, IndexError):
            return None

    @staticmethod
    def _own() -> float:
        times = os.times()
        return times.user + times.system

    def others(self) -> float:
        wall = max(1e-3, time.monotonic() - self.start)
        busy = self._busy()
        own = (self._own() - self.own) / wall
        if busy is None or self.machine is None:
            return max(0.0, os.getloadavg()[0] - own)
        return max(0.0, (busy - self.machine) / wall - own)


def busy_cores(seconds: float = 1.0) -> float:
    """How many cores other processes keep busy over the next `seconds`."""
    watch = CpuWatch()
    time.sleep(seconds)
    return watch.others()


def check_quiet(busy: float | None = None) -> None:
    """NotQuiet when other processes keep more than MAX_LOAD of a core busy."""
    busy = busy_cores() if busy is None else busy
    if busy > MAX_LOAD:
        raise NotQuiet(f"the machine is busy (other processes kept {busy:.1f} of its "
                       f"{os.cpu_count()} cores busy): its timings would be wrong; nothing is cached. "
                       "Tune again when it is quiet (`squeezestudy tune`); until then the static "
                       "defaults are used")


def candidates_along(axis: str, current: Choice, model: str, device: torch.device,
                     batch_size: int) -> list[Choice]:
    """The values of one setting to try, the others held at `current`."""
    if axis == "precision":
        values = ["fp32"] + (["bf16"] if bf16_supported(device) and bf16_allowed(model) else [])
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
    (pipelines.interleaved_rates), so that a machine whose speed drifts meanwhile slows them alike."""
    from squeezestudy.speed.pipelines import Setting, bench_config, interleaved_rates, project_timed

    config = bench_config(model, batch_size=batch_size)
    timed = [project_timed(config, dataset, device,
                           Setting(c.precision, c.channels_last, batch_size, c.micro_batch,
                                   threads=c.threads), warmup=1)
             for c in choices]
    return interleaved_rates(timed, device, steps=1, repeats=ROUNDS, burst_seconds=seconds / ROUNDS)


def spread(rounds: list[float]) -> float:
    """Highest round over lowest, less one."""
    return max(rounds) / min(rounds) - 1


def tune_model(model: str, dataset, device: torch.device, batch_size: int | None = None,
               seconds: float = 1.5, echo=print, deadline: float | None = None) -> dict:
    """Coordinate descent over SETTINGS from the static defaults, the values of one setting timed
    together; the fastest value (median of its rounds) replaces the current one only when every
    one of its rounds beat every round of the current one (stats.every_round_faster). A choice
    other than the default is timed against the default once more (`confirm`) and kept only if
    it wins every round again. Past `deadline` (time.monotonic()) no further setting is tried.
    Returns the cache entry: the choice (and `walked`, where the walk ended before the
    confirmation), the speed-up measured in the same rounds, every group
    timed with every round, and `quiet` False (with `why`) when the default's rounds spread more
    than MAX_SPREAD: such an entry is not cached."""
    batch_size = batch_size or spec(model).batch_size
    current = default = static_choice(model, device)
    groups: list[dict] = []

    def time_together(axis: str, choices: list[Choice]) -> dict[Choice, list[float]]:
        rounds = dict(zip(choices, measure(model, choices, dataset, device, batch_size, seconds),
                          strict=True))
        for choice, rates in rounds.items():
            echo(f"  {model:18s} {choice.label():58s} {statistics.median(rates):9,.0f} img/s "
                 f"(rounds {min(rates):,.0f}-{max(rates):,.0f})")
        groups.append({"axis": axis, "current": dataclasses.asdict(current),
                       "rates": [{**dataclasses.asdict(c), "images_per_s": statistics.median(r),
                                  "rounds": r} for c, r in rounds.items()]})
        return rounds

    default_rounds: list[list[float]] = []
    for axis in SETTINGS:
        if deadline is not None and time.monotonic() > deadline and default_rounds:
            break
        candidates = candidates_along(axis, current, model, device, batch_size)
        if current not in candidates:
            candidates.insert(0, current)
        if len(candidates) > 1:
            rounds = time_together(axis, candidates)
            if default in rounds:
                default_rounds.append(rounds[default])
            fastest = max(candidates, key=lambda c: statistics.median(rounds[c]))
            if every_round_faster(rounds[fastest], rounds[current]):
                current = fastest
    walked = current  # where the walk ended; kept only if the confirmation holds
    if current != default or not default_rounds:  # the speed-up, measured in the same rounds
        rounds = time_together("confirm", list(dict.fromkeys([default, current])))
        default_rounds.append(rounds[default])
        if not every_round_faster(rounds[current], rounds[default]):
            current = default
    rates = {c: statistics.median(r) for c, r in rounds.items()}  # the last group timed
    if current not in rates:  # the default kept, last timed in an earlier group
        rates[current] = statistics.median(default_rounds[-1])
    rate_default = statistics.median(default_rounds[-1])
    worst = sorted(default_rounds, key=spread)[len(default_rounds) // 2]  # the median group
    quiet = spread(worst) <= MAX_SPREAD
    return {"choice": dataclasses.asdict(current), "images_per_s": rates[current],
            "default": dataclasses.asdict(default), "walked": dataclasses.asdict(walked),
            "default_images_per_s": rate_default,
            "speedup": rates[current] / rate_default,
            "rule": "every round faster, twice", "groups": groups, "quiet": quiet,
            "why": "" if quiet else (
                f"the default's rounds spread {100 * spread(worst):.0f}% (median of {len(default_rounds)} "
                f"groups) "
                f"({min(worst):,.0f}-{max(worst):,.0f} img/s): the machine's speed moved"),
            "tuned_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def default_rate(model: str, dataset, device: torch.device, batch_size: int) -> float:
    """Images/s of the static default, one short burst (for the budget of `make study`)."""
    return statistics.median(measure(model, [static_choice(model, device)], dataset, device,
                                     batch_size, 0.6)[0])


def summary(model: str, entry: dict) -> str:
    chosen, default = Choice(**entry["choice"]), Choice(**entry["default"])
    if not entry["quiet"]:
        return f"{model}: not cached: {entry['why']}"
    if chosen == default:
        return f"{model}: the static default kept ({default.label()}), {entry['images_per_s']:,.0f} img/s"
    return (f"{model}: {chosen.label()}, {entry['speedup']:.2f}x the static default "
            f"({entry['images_per_s']:,.0f} against {entry['default_images_per_s']:,.0f} img/s)")


def tune(models: list[str], device: torch.device, dataset, seconds: float = 1.5,
         path: Path | None = None, echo=print, verbose: bool = False, require_quiet: bool = True,
         pending_epochs: dict[str, int] | None = None, budget_s: float = BUDGET_S) -> dict:
    """Tune each model and cache the results (other machines' entries kept): one line a model,
    every timing too when `verbose`. Refuses to start on a busy machine (NotQuiet), and caches
    only the models measured quietly. With `pending_epochs` a model is tuned only where
    MAX_GAIN of its pending training time exceeds its share of the budget."""
    from squeezestudy.training.config import TrainConfig

    if require_quiet:
        check_quiet()
    path = path or cache_path()
    key = machine_key(device)
    echo(f"tuning on {key}")
    detail = echo if verbose else (lambda *a: None)
    start, results = time.monotonic(), {}
    for i, model in enumerate(models):
        image_size = TrainConfig(model=model).resolved_image_size()
        batch_size = spec(model).batch_size
        share = (budget_s - (time.monotonic() - start)) / (len(models) - i)
        if pending_epochs is not None:
            rate = default_rate(model, dataset, device, batch_size)
            pending_s = pending_epochs.get(model, 0) * TRAIN_IMAGES / rate
            if MAX_GAIN * pending_s < share:
                echo(f"{model}: not tuned: its pending training takes about {pending_s / 60:,.1f} min "
                     f"at the defaults, and tuning could save at most {MAX_GAIN:.0%} of it, less than "
                     f"the {share:.0f} s tuning it costs")
                continue
        watch = CpuWatch()
        entry = tune_model(model, dataset, device, batch_size, seconds, detail,
                           deadline=time.monotonic() + share)
        entry["others_busy_cores"] = others = watch.others()
        if require_quiet and others > MAX_LOAD and entry["quiet"]:
            entry["quiet"], entry["why"] = False, (
                f"other processes kept {others:.1f} cores busy while it was measured")
        if require_quiet is False:
            entry["quiet"] = True
        echo(summary(model, entry))
        if entry["quiet"]:
            results[model_key(model, batch_size, image_size)] = entry
    if results:
        cache = read_cache(path)
        cache.setdefault(key, {}).update(results)
        path.parent.mkdir(parents=True, exist_ok=True)
        fileio.write_text(path, json.dumps(cache, indent=1, sort_keys=True) + "\n")
    echo(f"{time.monotonic() - start:.0f} s")
    return results

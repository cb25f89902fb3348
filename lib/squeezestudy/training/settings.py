"""Settings that change speed, not the result: this machine's tuned choice, else the model's static defaults.

`squeezestudy tune` (speed.tune) measures them and caches the choice per machine and model in
~/.cache/squeezestudy/tuning.json (or $SQUEEZESTUDY_TUNING); `fit` reads it here for every
setting a config leaves to auto.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from squeezestudy import kernels
from squeezestudy.core import machine
from squeezestudy.core.device import (
    resolve_precision,
)
from squeezestudy.models import spec
from squeezestudy.training.config import TrainConfig, has_batch_statistics

CACHE_ENV = "SQUEEZESTUDY_TUNING"
SETTINGS = ("precision", "channels_last", "micro_batch", "threads")


@dataclass(frozen=True)
class Choice:
    """Settings that change speed, not the recipe (micro-batches accumulate to the same update)."""

    precision: str
    channels_last: bool
    micro_batch: int  # 0: whole batches
    threads: int  # torch's intra-op threads

    def label(self) -> str:
        return (f"{self.precision}, channels_last {'on' if self.channels_last else 'off'}, "
                f"micro-batch {self.micro_batch or 'off'}, {self.threads} thread"
                + ("s" if self.threads > 1 else ""))


def cache_path() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "squeezestudy" / "tuning.json"


def check_cache_writable(path: Path | None = None) -> None:
    """OSError naming the cache and what to do, when tuning could not write its results there
    (checked before any measuring, so none is lost)."""
    path = path or cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"):
            pass
        if path.exists() and not os.access(path, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as err:
        raise OSError(f"the tuning cache {path} cannot be written ({err.strerror or err}); set "
                      f"${CACHE_ENV} to a file in a writable folder") from None


def machine_key(device: torch.device) -> str:
    """What the machine is, as far as speed goes."""
    here = machine.current()
    if device.type == "cuda":
        major, minor = (9, 0) if here.simulated else torch.cuda.get_device_capability(device)
        name = here.cuda_name if here.simulated else torch.cuda.get_device_name(device)
        what = f"cuda | {name} | sm {major}.{minor}"
    elif device.type == "cpu":
        what = f"cpu | {here.cpu_model} | {here.isa} | {here.threads} threads"
    else:
        what = f"{device.type} | {platform.machine()} | {platform.platform()}"
    return f"{what} | torch {torch.__version__}"


def model_key(model: str, batch_size: int, image_size: int) -> str:
    return f"{model} | batch {batch_size} | {image_size}x{image_size}"


def read_cache(path: Path | None = None) -> dict:
    """The cache, or {} when there is none; a damaged cache is ignored (it is only a speed hint)."""
    path = path or cache_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def choice_problem(choice: object) -> str | None:
    """Why a cached choice cannot be used on this machine (None: it can): a hand-edited or
    damaged cache, or one written for more threads than this machine has."""
    if not isinstance(choice, dict) or any(k not in choice for k in SETTINGS):
        return f"it is not a choice of {', '.join(SETTINGS)}"
    threads, micro_batch = choice["threads"], choice["micro_batch"]
    most = machine.current().threads
    if choice["precision"] not in ("fp32", "bf16"):
        return f"precision {choice['precision']!r} is not fp32 or bf16"
    if not isinstance(choice["channels_last"], bool):
        return f"channels_last {choice['channels_last']!r} is not true or false"
    if not isinstance(micro_batch, int) or isinstance(micro_batch, bool) or micro_batch < 0:
        return f"micro_batch {micro_batch!r} is not a whole number >= 0"
    if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= most:
        return f"threads {threads!r} is not a whole number from 1 to the {most} this machine has"
    return None


def lookup(model: str, batch_size: int, image_size: int, device: torch.device,
           path: Path | None = None, warn=None) -> Choice | None:
    """This machine's tuned choice for the model, None when it has none. An entry that cannot be
    used is ignored with one line (`warn`, default stderr), never a traceback or a wrong setting."""
    key = model_key(model, batch_size, image_size)
    entries = read_cache(path).get(machine_key(device), {})
    entry = entries.get(key) if isinstance(entries, dict) else None
    if entry is None:
        return None
    choice = entry.get("choice") if isinstance(entry, dict) else entry
    problem = choice_problem(choice)
    if problem:
        (warn or (lambda m: print(m, file=sys.stderr)))(
            f"ignoring the tuning cache's entry for {key} ({problem}); the static defaults are used: "
            f"run `squeezestudy tune` to measure it again ({path or cache_path()})")
        return None
    return Choice(**{k: choice[k] for k in SETTINGS})


def bf16_allowed(model: str) -> bool:
    """bf16 may be this model's default, or a tuning candidate: its bf16 accuracy was checked
    against fp32 (notebook 06: within 0.3 points; `ModelSpec.bf16_checked`), or it is one of the
    224x224 reference networks the study benchmarks but never trains (`ModelSpec.bf16_on_cpu`)."""
    model_spec = spec(model)
    return model_spec.bf16_checked or model_spec.bf16_on_cpu


def static_choice(model: str, device: torch.device) -> Choice:
    """What `fit` uses on a machine that was never tuned, from what the machine can do
    (machine.current()) and the model (ModelSpec):
    - precision: bf16 on CUDA, and on a CPU that runs it natively (AVX-512 bf16, AMX) for the
      models `bf16_allowed`; fp32 elsewhere (emulated bf16 is several times slower), and on a CPU
      for the models whose fp32 runs compiled kernels where they are built (`ModelSpec.cpu_kernels`);
    - channels_last: on, except on MPS (faster for every model measured: CPU 1.3-2x);
    - micro-batch: the model's `cpu_micro_batch` in fp32 on a CPU, whole batches in bf16, whose
      activations take half the bytes (docs/speed.md has the measurements per CPU kind);
    - threads: all of torch's."""
    kernels_here = device.type == "cpu" and spec(model).cpu_kernels and kernels.available()
    precision = resolve_precision("auto", device, prefer_bf16=device.type == "cuda"
                                  or (bf16_allowed(model) and not kernels_here))
    micro_batch = spec(model).cpu_micro_batch if device.type == "cpu" and precision == "fp32" else 0
    return Choice(precision, device.type != "mps", micro_batch, machine.current().threads)


def resolve_defaults(config: TrainConfig, device: torch.device) -> Choice:
    """The settings `fit` uses for `config` on `device`: those the config sets; for those left to
    auto, this machine's measured choice (`squeezestudy tune`), else the model's static defaults
    (ModelSpec; channels_last was faster for every model measured: CPU fp32 1.3-2x, CUDA bf16
    1.05-1.1x). micro_batch 0 means whole batches."""
    auto = (lookup(config.model, config.batch_size, config.resolved_image_size(), device)
            or static_choice(config.model, device))
    precision = auto.precision if config.precision == "auto" else resolve_precision(config.precision, device)
    channels_last = auto.channels_last if config.channels_last is None else config.channels_last
    micro_batch = auto.micro_batch if config.micro_batch is None else config.micro_batch
    if micro_batch and has_batch_statistics(config):
        if config.micro_batch:
            raise ValueError(f"micro_batch={config.micro_batch} with batch norm in the model: it would "
                             "normalise each micro-batch on its own statistics, a different update; "
                             "set micro_batch to 0 (or leave it to auto)")
        micro_batch = 0  # the tuned or static choice assumed a model without batch statistics
    return Choice(precision, channels_last, micro_batch, auto.threads)


def resumed_choice(config: TrainConfig, device: torch.device, saved: dict | None) -> Choice:
    """The settings a resumed run continues with: the precision it started with (a change of the
    defaults or of the tuning cache meanwhile must not change a run halfway), the rest as
    `resolve_defaults` gives them (they change speed, not the update). A checkpoint written before
    the choice was recorded started when auto meant bf16 on a CPU only for `bf16_on_cpu` models."""
    choice = resolve_defaults(config, device)
    if config.precision != "auto":
        return choice
    if saved and saved.get("precision") in ("fp32", "bf16"):
        precision = saved["precision"]
    elif device.type == "cpu":
        precision = resolve_precision("auto", device, prefer_bf16=spec(config.model).bf16_on_cpu)
    else:
        return choice
    return Choice(precision, choice.channels_last, choice.micro_batch, choice.threads)

"""Training throughput: the usual torchvision pipeline against this project's, on one machine.

For each model: images/s of the naive pipeline (torchvision `FashionMNIST` + `ToTensor`
(+ `Resize`) + `DataLoader`, fp32, as a user would write it), images/s of the project's
pipeline at its defaults and at every setting tried, the ratio, and the achieved training
FLOP/s (one step counted with `torch.utils.flop_counter`) over the matmul peak measured in
the same run at the same precision. Warm-up steps are excluded; each figure is the median
of several timed repeats, taken in rounds that visit every setting of a model in turn
(`interleaved_rates`). Writes outputs/benchmarks/throughput.json and .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
from dataclasses import dataclass, field

import torch

from squeezestudy.analysis import stats
from squeezestudy.core import fileio, machine
from squeezestudy.core.device import bf16_supported, device_name, pick_device
from squeezestudy.core.paths import BENCHMARKS_DIR, ensure_writable_dir
from squeezestudy.data import fashion_mnist as fmnist
from squeezestudy.models import spec
from squeezestudy.speed.pipelines import (
    Setting,
    interleaved_rates,
    matmul_peak,
    naive_timed,
    project_timed,
    torchvision_root,
    train_flops_per_image,
)
from squeezestudy.training.config import TrainConfig, build_model
from squeezestudy.training.settings import machine_key, read_cache, resolve_defaults

DEFAULT_MODELS = ("squeezenet_fmnist", "lenet", "alexnet", "squeezenet1_0")
# A model whose training step costs more than this runs a quarter of the timed steps on a CPU.
HEAVY_GFLOP_PER_IMAGE = 0.5


@dataclass(kw_only=True)
class Record:
    model: str
    pipeline: str  # naive | project
    precision: str
    settings: dict
    images_per_s: float
    ratio_vs_naive: float | None = None
    fraction_of_peak: float | None = None
    train_gflop_per_image: float = 0.0
    repeats: list[float] = field(default_factory=list)
    label: str = ""


def default_setting(model_name: str, device: torch.device) -> Setting:
    """What `fit` does by default on this device (see train.fit)."""
    batch_size = spec(model_name).batch_size
    choice = resolve_defaults(TrainConfig(model=model_name, batch_size=batch_size), device)
    return Setting(choice.precision, choice.channels_last, batch_size, choice.micro_batch,
                   threads=choice.threads, label="default")


def settings_grid(model_name: str, device: torch.device, quick: bool, try_compile: bool) -> list[Setting]:
    base = default_setting(model_name, device)
    grid = [base]

    def vary(label: str, **changes) -> None:
        grid.append(dataclasses.replace(base, label=label, **changes))

    other = "fp32" if base.precision == "bf16" else "bf16"
    if other == "fp32" or bf16_supported(device) or device.type == "cpu":
        vary(other, precision=other)
    vary("channels_last off" if base.channels_last else "channels_last on",
         channels_last=not base.channels_last)
    if base.micro_batch:
        vary("micro-batch off", micro_batch=0)
    else:
        vary(f"micro-batch {base.batch_size // 2}", micro_batch=base.batch_size // 2)
    if quick:
        return grid
    for bs in (base.batch_size // 2, base.batch_size * 2):
        if bs >= 8:
            vary(f"batch {bs}", batch_size=bs, micro_batch=0)
    if try_compile:
        vary("torch.compile", compile=True)
    if device.type == "cpu" and machine.current().threads > 1:
        vary("1 thread", threads=1)
    return grid


def run(models: list[str], steps: int, repeats: int, warmup: int, quick: bool, try_compile: bool,
        device_choice: str = "auto", data_dir: str | None = None, workers: int = 0,
        echo=print) -> tuple[list[Record], dict[str, float]]:
    device = pick_device(device_choice)
    dataset = fmnist.load(data_dir)
    root = torchvision_root(dataset.source)
    peaks = {p: matmul_peak(device, p) for p in ("fp32", "bf16")}
    echo(f"matmul peak on {device}: fp32 {peaks['fp32'] / 1e9:,.0f} GFLOP/s, "
         f"bf16 {peaks['bf16'] / 1e9:,.0f} GFLOP/s")
    records: list[Record] = []
    try:
        for name in models:
            batch = spec(name).batch_size
            config = TrainConfig(model=name)
            flops = train_flops_per_image(build_model(config), config.resolved_image_size(), 1)
            heavy = flops / 1e9 > HEAVY_GFLOP_PER_IMAGE and device.type == "cpu"
            n_steps = max(1, steps // 4) if heavy else steps
            grid = settings_grid(name, device, quick, try_compile)
            rates: dict[int, list[float]] = {}
            for i, setting in enumerate(grid):
                if setting.precision == "bf16" and not bf16_supported(device):
                    # emulated bf16 is 10-30x slower here: one step, timed alone, shows it
                    setting.label += " (emulated, 1 step)"
                    rates[i] = interleaved_rates([project_timed(name, dataset, device, setting, 1)],
                                                 device, steps=1, repeats=1)[0]
            together = [i for i in range(len(grid)) if i not in rates]
            timed = [naive_timed(name, root, device, batch, warmup, workers)]
            timed += [project_timed(name, dataset, device, grid[i], warmup) for i in together]
            naive_rates, *project_rates = interleaved_rates(timed, device, n_steps, repeats)
            del timed  # every setting's model and optimizer
            rates.update(zip(together, project_rates, strict=True))
            ips = statistics.median(naive_rates)
            naive = Record(model=name, pipeline="naive", precision="fp32",
                           settings={"batch_size": batch, "channels_last": False, "compile": False,
                                     "threads": torch.get_num_threads(), "workers": workers},
                           images_per_s=ips, ratio_vs_naive=1.0,
                           fraction_of_peak=flops * ips / peaks["fp32"],
                           train_gflop_per_image=flops / 1e9, repeats=naive_rates,
                           label="torchvision DataLoader")
            records.append(naive)
            echo(_line(naive))
            for i, setting in enumerate(grid):
                ips = statistics.median(rates[i])
                rec = Record(model=name, pipeline="project", precision=setting.precision,
                             settings=setting.describe(), images_per_s=ips,
                             ratio_vs_naive=ips / naive.images_per_s,
                             fraction_of_peak=flops * ips / peaks[setting.precision],
                             train_gflop_per_image=flops / 1e9, repeats=rates[i], label=setting.label)
                records.append(rec)
                echo(_line(rec))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return records, peaks


def default_verdicts(records: list[Record]) -> list[dict]:
    """Per model: the default setting against the fastest setting tried, batch-size rows
    excluded (they change the recipe). The target: the default within 5% of the best. "yes":
    its median is; "no": every round of the best beat every round of the default by more than
    5% (stats.every_round_faster); otherwise "not resolved": the rounds are too spread to tell."""
    verdicts = []
    for model in dict.fromkeys(r.model for r in records):
        tried = [r for r in records if r.model == model and r.pipeline == "project"
                 and not r.label.startswith("batch ")]
        default = next(r for r in tried if r.label == "default")
        best = max(tried, key=lambda r: r.images_per_s)
        if default.images_per_s >= 0.95 * best.images_per_s:
            verdict = "yes"
        elif stats.every_round_faster(best.repeats, default.repeats, by=1 / 0.95):
            verdict = "no"
        else:
            verdict = "not resolved"
        verdicts.append({"model": model, "default_images_per_s": default.images_per_s,
                         "best": best.label, "best_images_per_s": best.images_per_s,
                         "default_over_best": default.images_per_s / best.images_per_s,
                         "within_5_percent": verdict})
    return verdicts


def _line(r: Record) -> str:
    return (f"{r.model:18s} {r.pipeline:8s} {r.label:22s} {r.images_per_s:10,.0f} img/s  "
            f"x{r.ratio_vs_naive:5.2f}  {100 * r.fraction_of_peak:5.1f}% of peak")


def markdown(records: list[Record], meta: dict) -> str:
    lines = [f"# Training throughput: {meta['device_name']}", "",
             f"Training throughput on {meta['device_name']} ({meta['device']}), torch {meta['torch']}; "
             f"matmul peak fp32 {meta['peak_gflops']['fp32']:,.0f} GFLOP/s, "
             f"bf16 {meta['peak_gflops']['bf16']:,.0f} GFLOP/s.", "",
             "| model | pipeline | setting | precision | batch | images/s | rounds: lowest-highest "
             "| x naive | % of peak |",
             "|---|---|---|---|---|---:|---:|---:|---:|"]
    for r in records:
        lines.append(f"| {r.model} | {r.pipeline} | {r.label} | {r.precision} | "
                     f"{r.settings['batch_size']} | {r.images_per_s:,.0f} | "
                     f"{min(r.repeats):,.0f}-{max(r.repeats):,.0f} | {r.ratio_vs_naive:.2f} | "
                     f"{100 * r.fraction_of_peak:.1f} |")
    lines += ["", "| model | default images/s | fastest setting tried | its images/s | default / fastest "
              "| default within 5% |", "|---|---:|---|---:|---:|---|"]
    for v in default_verdicts(records):
        lines.append(f"| {v['model']} | {v['default_images_per_s']:,.0f} | {v['best']} | "
                     f"{v['best_images_per_s']:,.0f} | {v['default_over_best']:.2f} | "
                     f"{v['within_5_percent']} |")
    return "\n".join(lines) + "\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    p.add_argument("--steps", type=int, default=20, help="timed steps per repeat (alexnet and "
                   "squeezenet1_0 on CPU use a quarter)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="defaults, precision and layout only")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile setting")
    cores = os.cpu_count() or 1
    p.add_argument("--workers", type=int, default=0 if cores <= 2 else 4,
                   help="DataLoader workers of the naive pipeline (default: d2l's 4; 0 on 2 cores, "
                   "where a worker process measured slower than none)")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir")
    p.add_argument("--out", default=str(BENCHMARKS_DIR))


def main(args: argparse.Namespace) -> int:
    for name in args.models:
        spec(name)  # an unknown name fails here, listing the known ones
    if args.steps < 1 or args.repeats < 1 or args.warmup < 0 or args.workers < 0:
        raise ValueError("--steps and --repeats must be >= 1, --warmup and --workers >= 0")
    device = pick_device(args.device)
    out = ensure_writable_dir(args.out, "--out directory")  # before minutes of measuring
    records, peaks = run(args.models, args.steps, args.repeats, args.warmup, args.quick,
                  not args.no_compile, args.device, args.data_dir, args.workers)
    meta = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "device_name": device_name(device), "machine": machine_key(device),
            "tuned": bool(read_cache().get(machine_key(device))),
            "peak_gflops": {p: v / 1e9 for p, v in peaks.items()},
            "steps": args.steps, "repeats": args.repeats}
    payload = {"meta": meta, "records": [r.__dict__ for r in records],
               "defaults": default_verdicts(records)}
    fileio.write_text(out / "throughput.json", json.dumps(payload, indent=2) + "\n")
    table = markdown(records, meta)
    fileio.write_text(out / "throughput.md", table)
    print()
    print(table)
    return 0

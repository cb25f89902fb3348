"""Training throughput: the usual torchvision pipeline against this project's, on one machine.

For each model (and "headline", the headline network): images/s of the naive pipeline
(torchvision `FashionMNIST` + `ToTensor` (+ `Resize`) + `DataLoader`, fp32, as a user would write
it), images/s of the project's pipeline at its defaults and at every setting tried, the ratio, and
the achieved training FLOP/s (one step counted with `torch.utils.flop_counter`) against two peaks
at the same precision and thread count: the best of several GEMMs measured in the same run
(`pipelines.gemm_peak`, at the start and again at the end) and the CPU's theoretical one
(`machine.theoretical_peak`). Warm-up steps are excluded; the naive pipeline and every setting of
a model are timed in the same rounds, each visiting them all in turn (`interleaved_rates`), so a
ratio is read round by round, with the 95% interval its rounds support (`readings`, which also
renders the table). Writes outputs/benchmarks/<cpu kind>/throughput.json and .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
from pathlib import Path

import torch

from squeezestudy import kernels
from squeezestudy.core import allocator, fileio, machine
from squeezestudy.core.device import bf16_supported, device_name, pick_device
from squeezestudy.core.paths import BENCHMARKS_DIR, ensure_writable_dir
from squeezestudy.data import fashion_mnist as fmnist
from squeezestudy.models import spec
from squeezestudy.speed import readings
from squeezestudy.speed.pipelines import (
    HEADLINE,
    Setting,
    bench_config,
    gemm_peak,
    interleaved_rates,
    kernel_routes,
    naive_timed,
    project_timed,
    torchvision_root,
    train_flops_per_image,
)
from squeezestudy.training.config import build_model
from squeezestudy.training.settings import bf16_allowed, machine_key, read_cache, resolve_defaults

DEFAULT_MODELS = ("squeezenet_fmnist", "lenet", HEADLINE, "alexnet", "squeezenet1_0")
# A model whose training step costs more than this runs a quarter of the timed steps on a CPU.
HEAVY_GFLOP_PER_IMAGE = 0.5
# Where set, torch's and oneDNN's kernels were held to a lesser instruction set than the CPU's (an
# AVX2 machine's kernels, timed on an AVX-512 one); the record says so.
FORCED_KERNELS_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "SQUEEZESTUDY_SIMULATE_CPU")


def default_setting(name: str, device: torch.device) -> Setting:
    """What `fit` does by default on this device."""
    config = bench_config(name)
    choice = resolve_defaults(config, device)
    return Setting(choice.precision, choice.channels_last, config.batch_size, choice.micro_batch,
                   threads=choice.threads, label="default")


def settings_grid(name: str, device: torch.device, quick: bool, try_compile: bool) -> list[Setting]:
    base = default_setting(name, device)
    grid = [base]

    def vary(label: str, **changes) -> None:
        grid.append(dataclasses.replace(base, label=label, **changes))

    other = "fp32" if base.precision == "bf16" else "bf16"
    if other == "fp32" or bf16_supported(device) or device.type == "cpu":
        checked = other == "fp32" or bf16_allowed(bench_config(name).model)
        vary(other if checked else f"{other} (accuracy not checked)", precision=other)
    vary("channels_last off" if base.channels_last else "channels_last on",
         channels_last=not base.channels_last)
    if device.type == "cpu":
        # the pipeline before models.dropout and the fused AdamW (and for a bf16 default, in fp32:
        # the headline network's default before its bf16 accuracy was checked)
        vary(readings.STOCK, stock=True)
        if base.precision == "bf16":
            vary(f"fp32, {readings.STOCK}", precision="fp32", stock=True)
    if device.type == "cpu" and base.precision == "fp32" and kernels.available() \
            and kernel_routes(build_model(bench_config(name))):
        vary(readings.TORCH_OPS, kernels=False)  # a model with compiled kernels: without them
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


class Peaks:
    """GEMM peaks by (precision, threads), measured when first needed and again at the end (the
    best of both kept), with the CPU's theoretical peak beside each."""

    def __init__(self, device: torch.device, echo=print) -> None:
        self.device, self.echo, self.measured = device, echo, {}

    def __getitem__(self, key: tuple[str, int]) -> float:
        if key not in self.measured:
            self.measured[key] = gemm_peak(self.device, *key)
            self.echo(f"GEMM peak, {key[0]}, {key[1]} thread(s): "
                      f"{self.measured[key].flops / 1e9:,.0f} GFLOP/s ({self.measured[key].shape})")
        return self.measured[key].flops

    def remeasure(self) -> None:
        for key, first in list(self.measured.items()):
            again = gemm_peak(self.device, *key)
            if again.flops > first.flops:
                self.measured[key] = again

    def _theory(self, key: tuple[str, int]) -> machine.Peak | None:
        return machine.current().theoretical_peak(*key) if self.device.type == "cpu" else None

    def theoretical(self, key: tuple[str, int]) -> float | None:
        peak = self._theory(key)
        return peak.flops if peak else None

    def table(self) -> list[dict]:
        rows = []
        for (precision, threads), p in sorted(self.measured.items()):
            theory = self._theory((precision, threads))
            rows.append({"precision": precision, "threads": threads, "gflops": p.flops / 1e9,
                         "shape": p.shape, "rates": {k: v / 1e9 for k, v in p.rates.items()},
                         "theoretical_gflops": theory.flops / 1e9 if theory else None,
                         "theoretical": theory.describe() if theory else None})
        return rows


def run(models: list[str], steps: int, repeats: int, warmup: int, quick: bool, try_compile: bool,
        device_choice: str = "auto", data_dir: str | None = None, workers: int = 0,
        echo=print) -> tuple[list[readings.Record], Peaks]:
    device = pick_device(device_choice)
    dataset = fmnist.load(data_dir)
    root = torchvision_root(dataset.source)
    peaks = Peaks(device, echo)
    records: list[readings.Record] = []
    try:
        for name in models:
            config = bench_config(name)
            batch = config.batch_size
            flops = train_flops_per_image(build_model(config), config.resolved_image_size(),
                                          spec(config.model).in_channels)
            heavy = flops / 1e9 > HEAVY_GFLOP_PER_IMAGE and device.type == "cpu"
            n_steps = max(1, steps // 4) if heavy else steps
            grid = settings_grid(name, device, quick, try_compile)
            rates: dict[int, list[float]] = {}
            for i, setting in enumerate(grid):
                if setting.precision == "bf16" and not bf16_supported(device):
                    # emulated bf16 is 10-30x slower here: one step, timed alone, shows it
                    setting.label += " (emulated, 1 step)"
                    rates[i] = interleaved_rates([project_timed(config, dataset, device, setting, 1)],
                                                 device, steps=1, repeats=1)[0]
            together = [i for i in range(len(grid)) if i not in rates]
            timed = [naive_timed(config, root, device, warmup, workers)]
            timed += [project_timed(config, dataset, device, grid[i], warmup) for i in together]
            naive_rates, *project_rates = interleaved_rates(timed, device, n_steps, repeats)
            del timed  # every setting's model and optimizer
            rates.update(zip(together, project_rates, strict=True))
            naive = readings.Record(model=name, pipeline="naive", precision="fp32",
                           settings={"batch_size": batch, "channels_last": False, "compile": False,
                                     "threads": torch.get_num_threads(), "workers": workers},
                           images_per_s=statistics.median(naive_rates), ratio_vs_naive=1.0,
                           train_gflop_per_image=flops / 1e9, repeats=naive_rates,
                           ratio_rounds=[1.0] * len(naive_rates), label="torchvision DataLoader")
            records.append(naive)
            for i, setting in enumerate(grid):
                ips = statistics.median(rates[i])
                paired = (i in together and len(rates[i]) == len(naive_rates))
                records.append(readings.Record(
                    model=name, pipeline="project", precision=setting.precision,
                    settings=setting.describe(), images_per_s=ips,
                    ratio_vs_naive=ips / naive.images_per_s, train_gflop_per_image=flops / 1e9,
                    repeats=rates[i], label=setting.label,
                    ratio_rounds=[p / n for p, n in zip(rates[i], naive_rates, strict=True)]
                    if paired else [ips / naive.images_per_s]))
            for r in records[-len(grid) - 1:]:
                echo(readings.line(r))
        for r in records:  # the peak of each precision and thread count in use
            peaks[(r.precision, r.settings["threads"])]
        peaks.remeasure()
        for r in records:
            key = (r.precision, r.settings["threads"])
            emulated = r.precision == "bf16" and not bf16_supported(device)
            r.fraction_of_peak = None if emulated else r.gflops * 1e9 / peaks[key]
            theory = peaks.theoretical(key)
            r.fraction_of_theoretical = r.gflops * 1e9 / theory if theory else None
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return records, peaks


def save(out: Path, records: list[readings.Record], meta: dict) -> str:
    """Write throughput.json (the records, their meta and their verdicts) and throughput.md (the
    table, which it returns) into `out`."""
    payload = {"meta": meta, "records": [r.__dict__ for r in records],
               "defaults": readings.default_verdicts(records)}
    fileio.write_text(out / "throughput.json", json.dumps(payload, indent=2) + "\n")
    table = readings.markdown(records, meta)
    fileio.write_text(out / "throughput.md", table)
    return table


def rerender(path: Path) -> None:
    """Rewrite a committed throughput.json's verdicts and its throughput.md by today's code (after
    a change in how they are read), its measurements untouched."""
    payload = json.loads(path.read_text())
    save(path.parent, [readings.Record(**r) for r in payload["records"]], payload["meta"])


def default_out() -> Path:
    """outputs/benchmarks/<this CPU's kind> (or cuda, mps)."""
    here = machine.detect()
    kind = "cuda" if here.cuda else "mps" if here.mps else here.cpu_kind
    return BENCHMARKS_DIR / kind


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                   help="registered models, or headline (the headline network)")
    p.add_argument("--steps", type=int, default=6, help="timed steps per round (alexnet and "
                   "squeezenet1_0 on CPU use a quarter, at least one)")
    p.add_argument("--repeats", type=int, default=10, help="interleaved rounds: the ratios' "
                   "intervals come from their spread")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="the default, precision, layout, the old "
                   "pipeline and micro-batches only (no batch sizes, torch.compile or threads)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile setting")
    cores = os.cpu_count() or 1
    p.add_argument("--workers", type=int, default=0 if cores <= 2 else 4,
                   help="DataLoader workers of the naive pipeline (default: d2l's 4; 0 on 2 cores, "
                   "where a worker process measured slower than none)")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir")
    p.add_argument("--out", help="folder of throughput.json and .md (default: "
                   "outputs/benchmarks/<this CPU's kind>)")


def main(args: argparse.Namespace) -> int:
    for name in args.models:
        if name != HEADLINE:
            spec(name)  # an unknown name fails here, listing the known ones
    if args.steps < 1 or args.repeats < 1 or args.warmup < 0 or args.workers < 0:
        raise ValueError("--steps and --repeats must be >= 1, --warmup and --workers >= 0")
    device = pick_device(args.device)
    out = ensure_writable_dir(args.out or default_out(), "--out directory")  # before minutes of it
    load_before = os.getloadavg()[0]
    records, peaks = run(args.models, args.steps, args.repeats, args.warmup, args.quick,
                         not args.no_compile, args.device, args.data_dir, args.workers)
    meta = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "device_name": device_name(device), "machine": machine_key(device),
            "cpu": machine.current().describe(), "cpu_kind": machine.current().cpu_kind,
            "tuned": bool(read_cache().get(machine_key(device))), "peaks": peaks.table(),
            "load_before": load_before, "load_after": os.getloadavg()[0],
            "forced_kernels": {k: os.environ[k] for k in FORCED_KERNELS_ENV if os.environ.get(k)},
            "compiled_kernels": kernels.status() if device.type == "cpu" else "-",
            "steps": args.steps, "repeats": args.repeats, "allocator": allocator.keep_freed_memory()
            if device.type == "cpu" else "-"}
    table = save(out, records, meta)
    print()
    print(table)
    over = [r for r in records if r.fraction_of_peak and r.fraction_of_peak > 1]
    for r in over:
        print(f"note: {r.model} {r.label} ran at {100 * r.fraction_of_peak:.0f}% of the GEMM peak "
              "measured in this run: the machine was busier while the peak was measured; measure "
              "again on a quiet machine")
    return 0

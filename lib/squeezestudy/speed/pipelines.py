"""The two training pipelines the benchmark times, and what it measures them against.

The naive pipeline is torchvision's `FashionMNIST` + `ToTensor` (+ `Resize`) + `DataLoader` in fp32,
as a user would write it; the project's is `data.Batches` with `training.step.train_step` at a
`Setting`. `interleaved_rates` times several of them in rounds, so that a machine whose speed
drifts slows them alike. `matmul_peak` and `train_flops_per_image` give the FLOP/s scale.
"""

from __future__ import annotations

import gzip
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from squeezestudy.core.device import bf16_supported, synchronize
from squeezestudy.data import fashion_mnist as fmnist
from squeezestudy.models import spec
from squeezestudy.training.config import TrainConfig, build_model
from squeezestudy.training.step import make_optimizer, train_step


@dataclass
class Setting:
    precision: str
    channels_last: bool
    batch_size: int
    micro_batch: int = 0
    compile: bool = False
    threads: int | None = None
    label: str = ""

    def describe(self) -> dict:
        return {"precision": self.precision, "channels_last": self.channels_last,
                "batch_size": self.batch_size, "micro_batch": self.micro_batch,
                "compile": self.compile, "threads": self.threads or torch.get_num_threads()}


def matmul_peak(device: torch.device, precision: str, seconds: float = 1.0, n: int = 2048) -> float:
    """FLOP/s of an n x n x n matrix product at `precision` (median of 3 timed bursts)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    if device.type == "cuda":
        n = 8192
    elif precision == "bf16" and not bf16_supported(device):
        n = 512  # emulated bf16 runs at a few GFLOP/s: a large product would take minutes
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    synchronize(device)
    rates = []
    for _ in range(3):
        count, start = 0, time.perf_counter()
        while True:
            a @ b
            count += 1
            synchronize(device)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds / 3:
                break
        rates.append(2 * n**3 * count / elapsed)
    return statistics.median(rates)


def train_flops_per_image(model: nn.Module, image_size: int, in_channels: int, batch: int = 2) -> float:
    """Forward + backward FLOPs of one training step, per image (torch's flop counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = model.train()
    x = torch.randn(batch, in_channels, image_size, image_size)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


@dataclass
class Timed:
    """A training step, set up and ready to be timed: its batch size, and the threads it runs on
    (None: the process's)."""

    step: Callable[[], None]
    batch_size: int
    threads: int | None = None
    warmup: int = 0

    def run(self, steps: int, device: torch.device) -> float:
        """Seconds that `steps` steps take, on this step's threads."""
        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            start = time.perf_counter()
            for _ in range(steps):
                self.step()
            synchronize(device)
            return time.perf_counter() - start
        finally:
            torch.set_num_threads(previous)


def interleaved_rates(timed: list[Timed], device: torch.device, steps: int, repeats: int,
                      burst_seconds: float | None = None) -> list[list[float]]:
    """Images/s of each step in `timed`: after each one's warm-up, `repeats` rounds in which every
    step runs one burst of `steps` steps in turn, the order rotating by one each round. A machine
    whose speed drifts while it is measured (a shared host, a CPU warming up) then slows every
    setting alike instead of whichever was running at the time. With `burst_seconds`, one more
    timed step of each sets how many steps its burst takes."""
    bursts = []
    for t in timed:
        t.run(t.warmup, device)
        bursts.append(steps if burst_seconds is None
                      else max(1, round(burst_seconds / t.run(1, device))))
    rates: list[list[float]] = [[] for _ in timed]
    for round_ in range(repeats):
        for k in range(len(timed)):
            i = (round_ + k) % len(timed)
            rates[i].append(bursts[i] * timed[i].batch_size / timed[i].run(bursts[i], device))
    return rates


def _endless(batches):
    """Batches of a loader, epoch after epoch."""
    while True:
        yield from batches


def torchvision_root(source: Path) -> Path:
    """torchvision's FashionMNIST reads unzipped files from <root>/FashionMNIST/raw:
    give it a temporary copy (the source may be read-only)."""
    root = Path(tempfile.mkdtemp(prefix="fmnist-naive-"))
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for images, labels, _ in fmnist.FILES.values():
        for stem in (images, labels):
            src = source / stem
            if src.is_file():
                shutil.copy(src, raw / stem)
            else:
                with gzip.open(source / f"{stem}.gz", "rb") as f_in, open(raw / stem, "wb") as f_out:
                    shutil.copyfileobj(f_in, f_out)
    return root


def naive_timed(model_name: str, root: Path, device: torch.device, batch_size: int, warmup: int,
                workers: int) -> Timed:
    """The d2l way: PIL images through ToTensor (+ Resize) in a DataLoader, fp32, NCHW."""
    import torchvision
    from torchvision import transforms

    image_size = spec(model_name).image_size
    config = TrainConfig(model=model_name, device=str(device), precision="fp32")
    tfms = [transforms.ToTensor()]
    if image_size != 28:
        tfms.insert(0, transforms.Resize(image_size))
    dataset = torchvision.datasets.FashionMNIST(str(root), train=True,
                                                transform=transforms.Compose(tfms))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                         num_workers=workers, drop_last=True)
    torch.manual_seed(0)
    model = build_model(config).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = _endless(loader)

    def step():
        x, y = next(batches)
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return Timed(step, batch_size, warmup=warmup)


def project_timed(model_name: str, dataset: fmnist.FashionMNIST, device: torch.device,
                  setting: Setting, warmup: int) -> Timed:
    """The project's pipeline: uint8 data on the device, batched preprocessing, `train_step`."""
    config = TrainConfig(model=model_name, device=str(device), precision=setting.precision,
                         batch_size=setting.batch_size, channels_last=setting.channels_last)
    mean, std = dataset.mean_std()
    batches = fmnist.Batches(dataset.train, setting.batch_size, mean=mean, std=std, device=device,
                             image_size=config.resolved_image_size(), shuffle=True, drop_last=True,
                             channels_last=setting.channels_last)
    torch.manual_seed(0)
    model = build_model(config).to(device)
    if setting.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config)
    step_model = torch.compile(model) if setting.compile else model
    stream = _endless(batches)

    def step():
        x, y = next(stream)
        train_step(step_model, optimizer, x, y, device, setting.precision,
                   micro_batch=setting.micro_batch)

    return Timed(step, setting.batch_size, setting.threads, warmup + (3 if setting.compile else 0))

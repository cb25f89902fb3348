"""The two training pipelines the benchmark times, and what it measures them against.

The naive pipeline is torchvision's `FashionMNIST` + `ToTensor` (+ `Resize`) + `DataLoader` in fp32,
as a user would write it; the project's is `data.Batches` with `training.step.train_step` at a
`Setting`. `interleaved_rates` times several of them in rounds, so that a machine whose speed
drifts slows them alike. `matmul_peak` and `train_flops_per_image` give the FLOP/s scale.
"""

from __future__ import annotations

import dataclasses
import gzip
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from squeezestudy.core import allocator
from squeezestudy.core.device import synchronize
from squeezestudy.data import fashion_mnist as fmnist
from squeezestudy.models import dropout, spec
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
    # the pipeline as it was before models.dropout and the fused AdamW: torch's nn.Dropout and
    # AdamW's for-loop
    stock: bool = False
    kernels: bool = True  # False: torch's operations where the model has compiled kernels

    def describe(self) -> dict:
        described = {"precision": self.precision, "channels_last": self.channels_last,
                     "batch_size": self.batch_size, "micro_batch": self.micro_batch,
                     "compile": self.compile, "threads": self.threads or torch.get_num_threads()}
        return (described | ({"stock": True} if self.stock else {})
                | ({} if self.kernels else {"kernels": False}))


# The GEMMs a peak is measured on: square products of several sizes through torch.matmul (BLAS),
# and convolutions in channels_last (oneDNN, the library the models' convolutions run on): 1x1
# ones, and AlexNet-112's 5x5 and 3x3 layers, which oneDNN runs closer to the machine's peak than
# any 1x1 one (with the allocator's gain, its fp32 training reached 101% of a peak of 1x1
# convolutions and matrix products). Which one is fastest differs between CPUs and precisions.
CPU_MATMUL_SIZES = (256, 512, 1024, 2048)
# N, C in, C out, H, W, kernel (padded to keep H, W)
CPU_CONV_SHAPES = ((256, 256, 256, 14, 14, 1), (64, 512, 512, 14, 14, 1), (256, 128, 128, 28, 28, 1),
                   (32, 64, 192, 13, 13, 5), (64, 192, 384, 6, 6, 3))
CUDA_MATMUL_SIZES = (4096, 8192)


@dataclass
class GemmPeak:
    """The best FLOP/s of several GEMMs at one precision and thread count, and which one reached it."""

    flops: float
    shape: str
    rates: dict[str, float]


def _gemms(device: torch.device, dtype: torch.dtype) -> list[tuple[str, float, Callable[[], None]]]:
    """(name, FLOP per call, call) of each GEMM, smallest first."""
    gemms = []
    for n in CUDA_MATMUL_SIZES if device.type == "cuda" else CPU_MATMUL_SIZES:
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        gemms.append((f"matmul {n}", 2.0 * n**3, lambda a=a, b=b: a @ b))
    if device.type == "cpu":
        for n, c, out, h, w, k in CPU_CONV_SHAPES:
            x = torch.randn(n, c, h, w, dtype=dtype).to(memory_format=torch.channels_last)
            weight = torch.randn(out, c, k, k, dtype=dtype).to(memory_format=torch.channels_last)
            name = f"conv{k}x{k} {n}x{c}x{h}x{w}" + (f"->{out}" if out != c else "")
            gemms.append((name, 2.0 * n * h * w * c * out * k * k,
                          lambda x=x, weight=weight, k=k: F.conv2d(x, weight, padding=k // 2)))
    return gemms


def gemm_peak(device: torch.device, precision: str, threads: int | None = None,
              seconds: float = 0.25, repeats: int = 3) -> GemmPeak:
    """The best FLOP/s of `repeats` bursts of about `seconds` of each GEMM (CPU_MATMUL_SIZES,
    CPU_CONV_SHAPES) at `precision` on `threads` threads: the peak this machine reaches, which a
    training step's FLOP/s is measured against. A GEMM whose one call takes longer than a burst
    (emulated bf16) is timed once, and larger ones of its kind are skipped."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    rates: dict[str, float] = {}
    slow: set[str] = set()
    try:
        for name, flop, call in _gemms(device, dtype):
            kind = name.split()[0]
            if kind in slow:
                continue
            start = time.perf_counter()
            call()
            synchronize(device)
            first = time.perf_counter() - start
            best = flop / first
            if first > seconds:
                slow.add(kind)
            else:
                for _ in range(repeats):
                    count, start = 0, time.perf_counter()
                    while (elapsed := time.perf_counter() - start) < seconds or not count:
                        call()
                        synchronize(device)
                        count += 1
                    best = max(best, flop * count / elapsed)
            rates[name] = best
    finally:
        torch.set_num_threads(previous)
    shape = max(rates, key=rates.__getitem__)
    return GemmPeak(rates[shape], shape, rates)


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


# The headline network (notebook 12's chosen recipe), benchmarked under this name: the study's
# costliest training. tests/test_bench.py checks it against the committed headline run.
HEADLINE = "headline"
HEADLINE_CONFIG = {"model": "squeezenet_design", "augment": True, "model_kwargs": {
    "base_e": 96, "incr_e": 96, "sr": 0.125, "pct3x3": 0.5, "freq": 2, "conv1_filters": 96,
    "bypass": "simple"}}


def bench_names() -> list[str]:
    """The names the benchmark takes: every registered model, and "headline"."""
    from squeezestudy.models import REGISTRY

    return [*REGISTRY, HEADLINE]


def bench_config(name: str, **changes) -> TrainConfig:
    """The training config the benchmark times under `name` (a registered model or "headline"),
    at the model's batch size; `changes` override fields (precision, channels_last, ...)."""
    fields = dict(HEADLINE_CONFIG) if name == HEADLINE else {"model": name}
    fields.setdefault("batch_size", spec(fields["model"]).batch_size)
    return TrainConfig(**{**fields, **changes})


def kernel_routes(model: nn.Module) -> list[nn.Module]:
    """The modules of `model` that take compiled kernels (squeezestudy.kernels) where they can."""
    return [module for module in model.modules() if hasattr(module, "use_kernels")]


def torch_operations(model: nn.Module) -> nn.Module:
    """`model` running torch's operations where it has compiled kernels, in place: the naive
    pipeline is what a user writes with torch alone."""
    for module in kernel_routes(model):
        module.use_kernels = False
    return model


def naive_timed(config: TrainConfig, root: Path, device: torch.device, warmup: int,
                workers: int) -> Timed:
    """The d2l way: PIL images through ToTensor (+ Resize) in a DataLoader, fp32, NCHW (with the
    recipe's crop and flip as torchvision transforms where it augments)."""
    import torchvision
    from torchvision import transforms

    image_size = config.resolved_image_size()
    config = dataclasses.replace(config, device=str(device), precision="fp32")
    tfms = [transforms.ToTensor()]
    if image_size != 28:
        tfms.insert(0, transforms.Resize(image_size))
    if config.augment:
        tfms[:0] = [transforms.RandomCrop(28, padding=2), transforms.RandomHorizontalFlip()]
    dataset = torchvision.datasets.FashionMNIST(str(root), train=True,
                                                transform=transforms.Compose(tfms))
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=True,
                                         num_workers=workers, drop_last=True)
    torch.manual_seed(0)
    model = torch_operations(build_model(config).to(device))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = _endless(loader)

    def step():
        x, y = next(batches)
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return Timed(step, config.batch_size, warmup=warmup)


def project_timed(config: TrainConfig, dataset: fmnist.FashionMNIST, device: torch.device,
                  setting: Setting, warmup: int) -> Timed:
    """The project's pipeline: uint8 data on the device, batched preprocessing, `train_step`; on a
    CPU, under `fit`'s allocator setting (allocator.keep_freed_memory, for the whole process: a
    naive pipeline timed in the same process runs under it too, so a ratio does not count it)."""
    if device.type == "cpu":
        allocator.keep_freed_memory()
    config = dataclasses.replace(config, device=str(device), precision=setting.precision,
                                 batch_size=setting.batch_size, channels_last=setting.channels_last)
    mean, std = dataset.mean_std()
    batches = fmnist.Batches(dataset.train, setting.batch_size, mean=mean, std=std, device=device,
                             image_size=config.resolved_image_size(), shuffle=True, drop_last=True,
                             augment=config.augment, channels_last=setting.channels_last)
    torch.manual_seed(0)
    model = build_model(config).to(device)
    if setting.stock:
        dropout.stock(model)
    if not setting.kernels:
        torch_operations(model)
    if setting.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config, fused=not setting.stock)
    step_model = torch.compile(model) if setting.compile else model
    stream = _endless(batches)

    def step():
        x, y = next(stream)
        train_step(step_model, optimizer, x, y, device, setting.precision,
                   micro_batch=setting.micro_batch)

    return Timed(step, setting.batch_size, setting.threads, warmup + (3 if setting.compile else 0))

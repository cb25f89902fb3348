"""Model compression at Fashion-MNIST scale (the paper's Table 2, without Deep Compression):
fp16 storage and int8 post-training static quantization (torch.ao, FX graph mode, CPU),
with sizes measured from the files written, not computed."""

from __future__ import annotations

import contextlib
import copy
import warnings
from pathlib import Path

import torch
from torch import nn

from . import fileio
from .data import Batches


def save_weights(model: nn.Module, path: str | Path) -> int:
    """Write the state dict to `path`; returns the file's size in bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.torch_save(model.state_dict(), path)
    return path.stat().st_size


def to_fp16_storage(model: nn.Module) -> nn.Module:
    """Weights rounded to fp16 (what fp16 storage keeps), computing in fp32 on the CPU."""
    rounded = copy.deepcopy(model).eval()
    with torch.no_grad():
        for p in rounded.parameters():
            p.copy_(p.half().float())
    return rounded


@contextlib.contextmanager
def one_thread():
    """Run int8 calibration on one thread: the observed ranges, so the int8 file, would otherwise
    depend on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def quantize_int8(model: nn.Module, calibration: Batches, batches: int = 8,
                  backend: str = "x86") -> nn.Module:
    """int8 weights and activations by post-training static quantization (FX graph mode).
    `calibration` should come from training images; activation ranges are observed on
    `batches` of them."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    model = copy.deepcopy(model).cpu().eval()
    model = model.to(memory_format=torch.contiguous_format)
    example = next(iter(calibration))[0][:1].contiguous()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices point to torchao
        prepared = prepare_fx(model, get_default_qconfig_mapping(backend), (example,))
        with one_thread(), torch.no_grad():  # observed ranges, so the int8 file, thread-independent
            for i, (x, _) in enumerate(calibration):
                if i >= batches:
                    break
                prepared(x.contiguous())
            return convert_fx(prepared)


def compare_formats(model: nn.Module, name: str, test: Batches, calibration: Batches,
                    out_dir: str | Path) -> list[dict]:
    """For one trained model: saved size and test accuracy in fp32, fp16 and int8."""
    from .evaluate import evaluate

    out_dir = Path(out_dir)
    model = model.cpu().eval().to(memory_format=torch.contiguous_format)
    variants = {"fp32": model, "fp16": to_fp16_storage(model), "int8": quantize_int8(model, calibration)}
    rows = []
    for fmt, variant in variants.items():
        stored = variant.half() if fmt == "fp16" else variant
        size = save_weights(stored, out_dir / f"{name}-{fmt}.pt")
        _, acc = evaluate(variant.float() if fmt == "fp16" else variant, test)
        rows.append({"run": name, "format": fmt, "file_bytes": size, "test_acc": acc})
    return rows

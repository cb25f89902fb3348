"""Model compression at Fashion-MNIST scale (the paper's Table 2, without Deep Compression):
fp16 storage and int8 post-training static quantization (torch.ao, FX graph mode, CPU),
with sizes measured from the files written, not computed."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

from squeezestudy.core import fileio, machine
from squeezestudy.data.fashion_mnist import Batches


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


def quantize_int8(model: nn.Module, calibration: Batches, batches: int = 8,
                  backend: str = machine.QUANTIZED_ENGINE) -> nn.Module:
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
        with machine.int8_engine(), torch.no_grad():  # observed ranges: one engine, one thread
            for i, (x, _) in enumerate(calibration):
                if i >= batches:
                    break
                prepared(x.contiguous())
            return convert_fx(prepared)


def int8_result(model: nn.Module, name: str, test: Batches, calibration: Batches,
                out_file: str | Path | None = None, batches: int = 8) -> dict:
    """The int8 post-training quantization of `model`: its file's size and test accuracy, computed
    on one engine and one thread and recorded where it was measured (`measured.recorded`: int8
    kernels round differently on other CPUs, so later runs read the record back). The int8 file is
    written to `out_file` when it is measured, and kept as it is when the record is read back."""
    from squeezestudy.compression.measured import int8_fingerprint, recorded
    from squeezestudy.training.evaluate import evaluate

    def compute() -> dict:
        import tempfile

        int8 = quantize_int8(model, calibration, batches)
        with tempfile.TemporaryDirectory() as tmp:
            size = save_weights(int8, out_file or Path(tmp) / "int8.pt")
        with machine.int8_engine():
            return {"file_bytes": size, "test_acc": evaluate(int8, test)[1]}

    result = recorded(f"int8/{name}", int8_fingerprint(model, test, calibration, batches), compute)
    if out_file is not None and not Path(out_file).exists():  # a record without its file
        save_weights(quantize_int8(model, calibration, batches), out_file)
    return result


def compare_formats(model: nn.Module, name: str, test: Batches, calibration: Batches,
                    out_dir: str | Path) -> list[dict]:
    """For one trained model: saved size and test accuracy in fp32, fp16 and int8 (int8 as
    `int8_result` records it)."""
    from squeezestudy.training.evaluate import evaluate

    out_dir = Path(out_dir)
    model = model.cpu().eval().to(memory_format=torch.contiguous_format)
    rows = []
    for fmt, variant in {"fp32": model, "fp16": to_fp16_storage(model)}.items():
        stored = variant.half() if fmt == "fp16" else variant
        size = save_weights(stored, out_dir / f"{name}-{fmt}.pt")
        _, acc = evaluate(variant.float(), test)  # .half() above converted it in place
        rows.append({"run": name, "format": fmt, "file_bytes": size, "test_acc": acc})
    int8 = int8_result(model, name, test, calibration, out_dir / f"{name}-int8.pt")
    rows.append({"run": name, "format": "int8", **int8})
    return rows

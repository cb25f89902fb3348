"""Device and precision choice: CUDA, then MPS, then CPU; bf16 autocast where it pays."""

from __future__ import annotations

import contextlib

import torch

from squeezestudy.core import machine

PRECISIONS = ("auto", "fp32", "bf16")


def pick_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    here = machine.current()
    if device == "auto":
        if here.cuda:
            return torch.device("cuda")
        if here.mps:
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from err
    if chosen.type == "cuda":
        if not here.cuda:
            raise ValueError(f"device {device!r} asked for, but CUDA is not available here; "
                             "use device='auto' or 'cpu'")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} asked for, but there are only "
                             f"{torch.cuda.device_count()} CUDA device(s) (cuda:0..); use another index")
    elif chosen.type == "mps":
        if not here.mps:
            raise ValueError(f"device {device!r} asked for, but MPS (Apple GPU) is not available "
                             "here; use device='auto' or 'cpu'")
    elif chosen.type != "cpu":
        raise ValueError(f"device {device!r} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return chosen


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX or AVX-512 bf16, where bf16 matmuls run several times fp32's speed."""
    return machine.current().native_bf16


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return machine.current().cuda_bf16
    if device.type == "cpu":
        return cpu_has_fast_bf16()
    return False


def resolve_precision(precision: str, device: torch.device, prefer_bf16: bool = True) -> str:
    """'auto' means bf16 where the device runs it fast (CUDA with bf16, AMX CPUs) and the
    model benefits (`prefer_bf16`), else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {PRECISIONS}")
    if precision == "auto":
        return "bf16" if prefer_bf16 and bf16_supported(device) else "fp32"
    if precision == "bf16" and device.type == "mps":
        raise ValueError("bf16 autocast is not supported on MPS here; use precision='fp32'")
    return precision


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def device_name(device: torch.device) -> str:
    """What the device is, for run records: the GPU's name, or the CPU with its threads and ISA."""
    here = machine.current()
    if device.type == "cuda":
        return here.cuda_name if here.simulated else torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"cpu ({here.cpu_model}, {here.threads} threads, {here.isa})"
    return device.type


def device_label(device: torch.device) -> str:
    """The device for a log line, said once: `cpu (AMD EPYC, 2 threads, AVX2)`, `cuda (NVIDIA H200)`."""
    name = device_name(device)
    return name if name.startswith(device.type) else f"{device} ({name})"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()

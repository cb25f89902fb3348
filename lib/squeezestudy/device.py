"""Device and precision choice: CUDA, then MPS, then CPU; bf16 autocast where it pays."""

from __future__ import annotations

import contextlib
import platform

import torch

PRECISIONS = ("auto", "fp32", "bf16")


def pick_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from err
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available here; "
                             "use device='auto' or 'cpu'")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} asked for, but there are only "
                             f"{torch.cuda.device_count()} CUDA device(s) (cuda:0..); use another index")
    elif chosen.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"device {device!r} asked for, but MPS (Apple GPU) is not available "
                             "here; use device='auto' or 'cpu'")
    elif chosen.type != "cpu":
        raise ValueError(f"device {device!r} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return chosen


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX or AVX-512 bf16, where bf16 matmuls run several times fp32's speed."""
    try:
        isa = torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        return False
    if isa in ("AVX512_BF16", "AMX"):
        return True
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
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
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        isa = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")()
        return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {isa})"
    return device.type


def device_label(device: torch.device) -> str:
    """The device for a log line, said once: `cpu (x86_64, 2 threads, AVX2)`, `cuda (NVIDIA H200)`."""
    name = device_name(device)
    return name if name.startswith(device.type) else f"{device} ({name})"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()

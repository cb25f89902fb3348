"""What this machine is, read in one place: the CPU's kind (AVX2 only, AVX-512, AVX-512 with native
bf16, AMX), its model name, torch's threads and quantized engine, and whether CUDA or MPS is here.

Every decision that depends on the machine (bf16 where it is native, the tuning cache's key, the
benchmark's candidates, the int8 engine, the device `auto` picks) reads `current()`, so a test can
set the machine with `simulate(...)` and cover every kind on any computer:

    with machine.simulate("avx512_bf16"):      # or "avx2", "avx512", "amx", "cuda"
        ...                                     # decisions as on a Zen 4; kernels stay this CPU's

`SQUEEZESTUDY_SIMULATE_CPU` (one of CPU_KINDS) does the same for a whole process. A simulation
changes what the code decides, not the kernels torch runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass

import torch

# The CPU kinds this project's machines have, from least to most capable for bf16.
CPU_KINDS = ("avx2", "avx512", "avx512_bf16", "amx")
SIMULATE_ENV = "SQUEEZESTUDY_SIMULATE_CPU"
# int8 post-training quantization runs on this engine (fbgemm's x86 kernels), on one thread.
QUANTIZED_ENGINE = "x86"

# The flags of each kind, as /proc/cpuinfo spells them, and torch's capability on it.
_KIND_FLAGS = {"avx2": {"avx2"}, "avx512": {"avx2", "avx512f"},
               "avx512_bf16": {"avx2", "avx512f", "avx512_bf16"},
               "amx": {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}}
_KIND_ISA = {"avx2": "AVX2", "avx512": "AVX512", "avx512_bf16": "AVX512", "amx": "AVX512"}
_KIND_NAMES = {"avx2": "AVX2 only (bf16 emulated)", "avx512": "AVX-512 (bf16 emulated)",
               "avx512_bf16": "AVX-512 with native bf16", "amx": "AMX (native bf16 tiles)"}


@dataclass(frozen=True)
class Machine:
    cpu_kind: str  # one of CPU_KINDS (or "other": no AVX2, or not x86)
    cpu_model: str
    isa: str  # torch's CPU capability: the kernels ATen dispatches to (AVX2, AVX512, ...)
    cuda: bool = False
    cuda_name: str = ""
    cuda_bf16: bool = False
    mps: bool = False
    simulated: bool = False

    @property
    def native_bf16(self) -> bool:
        """bf16 matmuls in hardware (AVX-512 bf16 or AMX): several times fp32's speed there."""
        return self.cpu_kind in ("avx512_bf16", "amx")

    @property
    def amx(self) -> bool:
        return self.cpu_kind == "amx"

    @property
    def avx512(self) -> bool:
        return self.cpu_kind in ("avx512", "avx512_bf16", "amx")

    @property
    def threads(self) -> int:
        """torch's intra-op threads now (a setting of the process, so read each time)."""
        return torch.get_num_threads()

    def describe(self) -> str:
        """One line for logs and CI: `AMD EPYC 9R14: AVX-512 with native bf16 (torch AVX512), 2 threads`."""
        kind = _KIND_NAMES.get(self.cpu_kind, self.cpu_kind)
        line = f"{self.cpu_model}: {kind} (torch {self.isa}), {self.threads} threads"
        if self.cuda:
            line += f"; CUDA {self.cuda_name}"
        if self.mps:
            line += "; MPS"
        return line + (" [simulated]" if self.simulated else "")


def kind_from_flags(flags: set[str]) -> str:
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "other"


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), flags


@functools.lru_cache(maxsize=1)
def detect() -> Machine:
    """This machine as it is (cached: none of it changes while a process runs)."""
    model, flags = _cpuinfo()
    isa = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")()
    kind = kind_from_flags(flags)
    if kind == "other" and isa in ("AVX2", "AVX512"):  # no /proc/cpuinfo (macOS x86): torch knows
        kind = isa.lower()
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return Machine(kind, model, isa, cuda=cuda,
                   cuda_name=torch.cuda.get_device_name(0) if cuda else "",
                   cuda_bf16=bool(cuda and torch.cuda.is_bf16_supported()), mps=mps)


def simulated(kind: str, base: Machine | None = None) -> Machine:
    """`base` (this machine) as if its CPU were of `kind`; "cuda" adds a bf16-capable GPU."""
    base = base or detect()
    if kind == "cuda":
        return dataclasses.replace(base, cuda=True, cuda_name="simulated GPU", cuda_bf16=True,
                                   simulated=True)
    if kind not in CPU_KINDS:
        raise ValueError(f"unknown machine kind {kind!r}; use one of {', '.join(CPU_KINDS)} or cuda")
    return dataclasses.replace(base, cpu_kind=kind, isa=_KIND_ISA[kind], cuda=False, cuda_name="",
                               cuda_bf16=False, mps=False, simulated=True,
                               cpu_model=f"{base.cpu_model} as {kind}")


_override: list[Machine] = []


def current() -> Machine:
    """The machine decisions are made for: a simulation if one is set, else this one."""
    if _override:
        return _override[-1]
    kind = os.environ.get(SIMULATE_ENV)
    return simulated(kind) if kind else detect()


@contextlib.contextmanager
def simulate(kind: str) -> Iterator[Machine]:
    """Decide as on a machine of `kind` (CPU_KINDS, or "cuda") inside the block."""
    machine = simulated(kind)
    _override.append(machine)
    try:
        yield machine
    finally:
        _override.remove(machine)


def cpu_kind_flags(kind: str) -> set[str]:
    """The /proc/cpuinfo flags a CPU of `kind` shows (for tests of detection)."""
    return set(_KIND_FLAGS[kind])


@contextlib.contextmanager
def int8_engine() -> Iterator[None]:
    """int8 calibration and evaluation on one engine and one thread: what can be fixed of the int8
    kernels. Their results still differ between CPU kinds by an image or two, so the study records
    int8 accuracies once, where they were measured (`measured.py`), and reads them back."""
    threads, engine = torch.get_num_threads(), torch.backends.quantized.engine
    torch.set_num_threads(1)
    if QUANTIZED_ENGINE in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = QUANTIZED_ENGINE
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.quantized.engine = engine


def main() -> int:
    print(current().describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

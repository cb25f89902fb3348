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
from pathlib import Path

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
    vendor: str = ""  # "AMD", "Intel" or "" (from /proc/cpuinfo's vendor_id)
    cores: int = 0  # physical cores (each core's FMA units are shared by its SMT threads)
    clock_ghz: float = 0.0  # the clock the CPU reports (its base or current one; 0: unknown)

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

    def theoretical_peak(self, precision: str, threads: int | None = None) -> Peak | None:
        """The most FLOP/s `threads` threads of this CPU can do at `precision` (None: unknown)."""
        return theoretical_peak(self, precision, threads or self.threads)

    def describe(self) -> str:
        """One line for logs and CI: `AMD EPYC 9R14: AVX-512 with native bf16 (torch AVX512), 2 threads`."""
        kind = _KIND_NAMES.get(self.cpu_kind, self.cpu_kind)
        line = f"{self.cpu_model}: {kind} (torch {self.isa}), {self.threads} threads"
        if self.cuda:
            line += f"; CUDA {self.cuda_name}"
        if self.mps:
            line += "; MPS"
        return line + (" [simulated]" if self.simulated else "")


# FLOP a core does per cycle, by kind and vendor: FMA units x vector lanes x 2. Zen 4 runs AVX-512 on
# two 256-bit FMA pipes (a 512-bit FMA each cycle), Intel's AVX-512 cores have two 512-bit FMA
# units; vdpbf16ps doubles the FMAs of a lane; AMX's tile unit does 1,024 bf16 FLOP a cycle. Where
# bf16 is emulated it runs on the fp32 units, at best at their rate.
_FLOP_PER_CYCLE = {("avx2", ""): (32, 32), ("avx512", "AMD"): (32, 32), ("avx512", ""): (64, 64),
                   ("avx512_bf16", "AMD"): (32, 64), ("avx512_bf16", ""): (64, 128),
                   ("amx", ""): (64, 1024)}
# The highest boost clock of each line (GHz): virtual machines report their base clock, so the
# ceiling uses the line's fastest part (AMD EPYC 9174F 4.4, Ryzen 7950X 5.7, Xeon 8480+'s peers 4.2,
# Core i9-14900K 6.0).
_BOOST_CEILING = (("AMD", "EPYC", 4.4), ("AMD", "", 5.7), ("Intel", "Xeon", 4.3), ("Intel", "", 6.0))


@dataclass(frozen=True)
class Peak:
    """A theoretical peak: cores x clock x FLOP per cycle, and where each factor came from."""

    flops: float
    cores: int
    clock_ghz: float
    flop_per_cycle: int
    clock_source: str

    def describe(self) -> str:
        return (f"{self.flops / 1e9:,.0f} GFLOP/s ({self.cores} core{'s' if self.cores > 1 else ''} x "
                f"{self.clock_ghz:.1f} GHz x {self.flop_per_cycle} FLOP a cycle; {self.clock_source})")


def theoretical_peak(here: Machine, precision: str, threads: int) -> Peak | None:
    """Cores x clock x FLOP per cycle: a ceiling no measurement can pass. The clock is the highest
    boost of the CPU's line (or the reported clock where that is higher), so the ceiling holds on
    a machine that reports only its base clock."""
    table = {k: v for k, v in _FLOP_PER_CYCLE.items() if k[0] == here.cpu_kind}
    per_cycle = table.get((here.cpu_kind, here.vendor)) or table.get((here.cpu_kind, ""))
    if per_cycle is None or precision not in ("fp32", "bf16"):
        return None
    line = next(((vendor, name, ghz) for vendor, name, ghz in _BOOST_CEILING
                 if vendor == here.vendor and name in here.cpu_model), None)
    reported = f"; this one reports {here.clock_ghz:.1f} GHz" if here.clock_ghz else ""
    if line and line[2] >= here.clock_ghz:
        clock, source = line[2], f"the highest boost of {line[0]} {line[1] or 'CPUs'}{reported}"
    else:
        clock, source = here.clock_ghz, "the clock this CPU reports"
    if not clock:
        return None
    cores = max(1, min(threads, here.cores or threads))
    flop = per_cycle[precision == "bf16"]
    return Peak(cores * clock * 1e9 * flop, cores, clock, flop, source)


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


@dataclass
class _CpuInfo:
    model: str = ""
    flags: set[str] = dataclasses.field(default_factory=set)
    vendor: str = ""
    cores: int = 0
    clock_ghz: float = 0.0


def parse_cpuinfo(text: str) -> _CpuInfo:
    """/proc/cpuinfo's model, flags, vendor, physical cores and clock."""
    info, core_ids, physical = _CpuInfo(), set(), ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and not info.model:
            info.model = value
        elif key == "flags" and not info.flags:
            info.flags = set(value.split())
        elif key == "vendor_id" and not info.vendor:
            info.vendor = {"AuthenticAMD": "AMD", "GenuineIntel": "Intel"}.get(value, "")
        elif key == "cpu MHz" and not info.clock_ghz:
            with contextlib.suppress(ValueError):
                info.clock_ghz = float(value) / 1000
        elif key == "physical id":
            physical = value
        elif key == "core id":
            core_ids.add((physical, value))
    info.cores = len(core_ids)
    return info


def _cpuinfo() -> _CpuInfo:
    try:
        with open("/proc/cpuinfo") as f:
            info = parse_cpuinfo(f.read())
    except OSError:
        info = _CpuInfo()
    info.model = info.model or platform.processor() or platform.machine()
    try:  # a host that shows its frequency range: its highest clock
        max_khz = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text())
        info.clock_ghz = max(info.clock_ghz, max_khz / 1e6)
    except (OSError, ValueError):
        pass
    info.cores = info.cores or os.cpu_count() or 1
    return info


@functools.lru_cache(maxsize=1)
def detect() -> Machine:
    """This machine as it is (cached: none of it changes while a process runs)."""
    info = _cpuinfo()
    model = info.model
    isa = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")()
    kind = kind_from_flags(info.flags)
    if kind == "other" and isa in ("AVX2", "AVX512"):  # no /proc/cpuinfo (macOS x86): torch knows
        kind = isa.lower()
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return Machine(kind, model, isa, cuda=cuda,
                   cuda_name=torch.cuda.get_device_name(0) if cuda else "",
                   cuda_bf16=bool(cuda and torch.cuda.is_bf16_supported()), mps=mps,
                   vendor=info.vendor, cores=info.cores, clock_ghz=info.clock_ghz)


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

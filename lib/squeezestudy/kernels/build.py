"""Compile `conv_pool.c` once per machine and load it; say why not where it cannot be.

The library is built with the C compiler at hand (`$CC`, else cc, gcc or clang) into the cache
(`$SQUEEZESTUDY_KERNELS_DIR`, else ~/.cache/squeezestudy/kernels), under a name that hashes the
source, the flags and the compiler, so an edit or another compiler builds anew and concurrent
processes never load a half-written file (each writes its own, then renames it into place).

It is used only where it shares torch's OpenMP runtime (Linux, torch built with OpenMP: the
library's `#pragma omp` then runs on torch's own threads; two runtimes would fight over the
cores). `SQUEEZESTUDY_KERNELS=0` turns it off. Everywhere else, or when the build fails, the
models run torch's operations, and `status()` says why in one line.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from squeezestudy.core import machine

SOURCE = Path(__file__).with_name("conv_pool.c")
ENV_OFF = "SQUEEZESTUDY_KERNELS"
ENV_DIR = "SQUEEZESTUDY_KERNELS_DIR"
COMPILERS = ("cc", "gcc", "clang")

_P, _L, _I = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
SIGNATURES = {
    "relu_pool": ([_P, _P, _P, _L, _L, _L, _L, _I], _I),
    "conv_relu_pool": ([_P, _P, _P, _P, _P, _L, _L, _L, _L, _L, _I], None),
    "conv_relu_pool_back": ([_P, _P, _P, _P, _P, _P, _L, _L, _L, _L, _L, _I], None),
    "conv_back_pooled": ([_P, _P, _P, _P, _P, _P, _P, _P, _L, _L, _L, _L, _L, _L, _I], _I),
    "conv_pool_back_indexed": ([_P, _P, _P, _P, _P, _P, _L, _L, _L, _L, _L, _L, _L, _L, _I], _I),
}


class KernelsUnavailable(RuntimeError):
    """The compiled kernels cannot be used here; the message says why."""


def cache_dir() -> Path:
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "squeezestudy" / "kernels"


def compiler() -> str | None:
    """The C compiler's path: `$CC` if set, else the first of cc, gcc, clang on PATH."""
    names = [os.environ["CC"]] if os.environ.get("CC") else list(COMPILERS)
    return next((path for name in names if (path := shutil.which(name))), None)


def flags() -> list[str]:
    """Optimised, position-independent, OpenMP; AVX2 and FMA on an x86 CPU that has them (each
    CPU kind this study's machines have: `machine.detect()`, the hardware, not a simulation)."""
    out = ["-O3", "-shared", "-fPIC", "-fopenmp", "-std=c11"]
    if platform.machine() in ("x86_64", "AMD64") and machine.detect().cpu_kind in machine.CPU_KINDS:
        out.append("-march=x86-64-v3")
    return out


def _version(cc: str) -> str:
    try:
        run = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (run.stdout.splitlines() or ["?"])[0]


def library_path(cc: str) -> Path:
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(flags()).encode() + _version(cc).encode())
    return cache_dir() / f"conv_pool-{key.hexdigest()[:16]}.so"


def compile_library(cc: str, target: Path) -> Path:
    """Build `SOURCE` into `target` (KernelsUnavailable with the compiler's first error line)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".so")
        os.close(fd)
    except OSError as err:
        raise KernelsUnavailable(f"the kernel cache {target.parent} cannot be written "
                                 f"({err.strerror or err}); set ${ENV_DIR} to a writable folder") from None
    try:
        run = subprocess.run([cc, *flags(), str(SOURCE), "-o", tmp], capture_output=True, text=True,
                             timeout=300)
        if run.returncode != 0:
            first = next((ln for ln in run.stderr.splitlines() if "error" in ln), run.stderr.strip()[:200])
            raise KernelsUnavailable(f"{Path(cc).name} could not build {SOURCE.name}: {first}")
        os.replace(tmp, target)
    except (OSError, subprocess.SubprocessError) as err:
        raise KernelsUnavailable(f"{Path(cc).name} could not build {SOURCE.name}: {err}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def openmp_runtimes() -> set[str]:
    """The OpenMP runtimes loaded in this process (Linux: from /proc/self/maps)."""
    try:
        text = Path("/proc/self/maps").read_text()
    except OSError:
        return set()
    names = ("libgomp", "libomp", "libiomp")
    return {os.path.realpath(line.split()[-1]) for line in text.splitlines()
            if "/" in line and any(n in line.rsplit("/", 1)[-1] for n in names)}


def _load() -> ctypes.CDLL:
    if os.environ.get(ENV_OFF, "1").strip().lower() in ("0", "off", "no", "false"):
        raise KernelsUnavailable(f"turned off (${ENV_OFF}={os.environ[ENV_OFF]})")
    if platform.system() != "Linux" or not torch.backends.openmp.is_available():
        raise KernelsUnavailable("they are built only on Linux with a torch that uses OpenMP")
    cc = compiler()
    if cc is None:
        raise KernelsUnavailable("no C compiler (cc, gcc or clang; or set $CC)")
    path = library_path(cc)
    if not path.exists():
        compile_library(cc, path)
    before = openmp_runtimes()
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as err:
        raise KernelsUnavailable(f"{path.name} does not load: {err}") from None
    if len(openmp_runtimes()) > max(1, len(before)):
        raise KernelsUnavailable(f"{path.name} brought a second OpenMP runtime beside torch's")
    for name, (args, result) in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, result
    return lib


@functools.lru_cache(maxsize=1)
def _loaded() -> tuple[ctypes.CDLL | None, str]:
    try:
        return _load(), "built"
    except KernelsUnavailable as err:
        return None, str(err)


def library() -> ctypes.CDLL:
    """The loaded kernels (built on first use); KernelsUnavailable says why not."""
    lib, why = _loaded()
    if lib is None:
        raise KernelsUnavailable(why)
    return lib


def available() -> bool:
    return _loaded()[0] is not None


def status() -> str:
    """One line: "built" or why the kernels are not used here."""
    return _loaded()[1]


def reset() -> None:
    """Forget the outcome of the last load (tests; after changing the environment)."""
    _loaded.cache_clear()

"""Keep freed memory in the process, so that a CPU training step does not fault its pages in anew.

glibc's malloc gives an allocation above its mmap threshold its own pages from the kernel, and
hands the top of its heap back once more than its trim threshold lies free there. Both thresholds
start at 128 KiB and rise with what is freed (the mmap threshold up to 32 MiB, the trim threshold
to twice it). A training step frees and allocates activations of a few MiB each, step after
step, and with those defaults some of them come back as fresh pages every step: each first touch
of a page is a page fault. On this study's CPU (a
2-core AMD EPYC, Zen 4) that was 4,072-4,324 page faults a step for the one-Fire SqueezeNet at
batch 256 (in five processes of six; none in the sixth), 6,294-10,475 for the headline network,
none for LeNet, whose activations are smaller. With the thresholds raised, none (AlexNet-112
still 24,578: its largest buffers are over 32 MiB), and a step was 1.30x (95% interval
1.10-1.53) as fast for the one-Fire SqueezeNet, 1.19x (1.02-1.39) for the headline network,
1.10x (1.05-1.15) for AlexNet-112 and 1.01x (0.97-1.05) for LeNet; six pairs of processes each
(`outputs/logs/allocator-2026-12-06.log`).

`keep_freed_memory` raises both thresholds once per process (glibc's `mallopt`), so freed memory
waits in the heap for the next step: the remedy PyTorch's performance tuning guide gives for
CPUs is another allocator (jemalloc or tcmalloc, preloaded); this one needs no other library. The
process keeps the memory it has freed until it ends: at most its peak use. Nothing is computed
differently.

Where the C library is not glibc, nothing is done. Nothing is done either where the user set
glibc's own variables (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`) or set
`SQUEEZESTUDY_MALLOC=default`.
"""

from __future__ import annotations

import ctypes
import functools
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's largest: bigger allocations always get their own pages
TRIM_THRESHOLD = 1 << 30  # keep up to 1 GiB free at the top of the heap
USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
OPT_OUT = "SQUEEZESTUDY_MALLOC"  # "default": leave glibc's allocator as it is


def _glibc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc (it alone has mallopt's thresholds), else None."""
    try:
        libc = ctypes.CDLL(None)  # the symbols the process has loaded, its C library's among them
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
    except (OSError, AttributeError, TypeError):
        return None
    return libc


@functools.cache
def keep_freed_memory() -> str:
    """Raise glibc's mmap and trim thresholds for this process, once (later calls return the first
    answer); returns what holds: "kept", "not glibc", "user's MALLOC_ variables" or "opted out"."""
    if os.environ.get(OPT_OUT, "").strip().lower() == "default":
        return "opted out"
    if any(os.environ.get(name) for name in USER_VARIABLES):
        return "user's MALLOC_ variables"
    if (libc := _glibc()) is None:
        return "not glibc"
    ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return "kept" if ok else "not glibc"

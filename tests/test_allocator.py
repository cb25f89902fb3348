"""core.allocator: glibc's thresholds raised once per process, where glibc and the user allow it,
and what it is for: freed activations are not page-faulted in anew."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from squeezestudy.core import allocator


class FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1


@pytest.fixture
def fresh(monkeypatch):
    """A process that has not called keep_freed_memory, with glibc faked and no MALLOC_ variables."""
    allocator.keep_freed_memory.cache_clear()
    for name in (*allocator.USER_VARIABLES, allocator.OPT_OUT):
        monkeypatch.delenv(name, raising=False)
    libc = FakeLibc()
    monkeypatch.setattr(allocator, "_glibc", lambda: libc)
    yield libc
    allocator.keep_freed_memory.cache_clear()


def test_raises_both_thresholds_once(fresh):
    assert allocator.keep_freed_memory() == "kept"
    assert allocator.keep_freed_memory() == "kept"
    assert fresh.calls == [(allocator.M_MMAP_THRESHOLD, allocator.MMAP_THRESHOLD),
                           (allocator.M_TRIM_THRESHOLD, allocator.TRIM_THRESHOLD)]


@pytest.mark.parametrize("name, value, state", [
    ("SQUEEZESTUDY_MALLOC", "default", "opted out"),
    ("SQUEEZESTUDY_MALLOC", " Default ", "opted out"),
    ("MALLOC_TRIM_THRESHOLD_", "0", "user's MALLOC_ variables"),
    ("MALLOC_MMAP_THRESHOLD_", "131072", "user's MALLOC_ variables"),
])
def test_leaves_the_allocator_to_the_user(fresh, monkeypatch, name, value, state):
    monkeypatch.setenv(name, value)
    assert allocator.keep_freed_memory() == state
    assert fresh.calls == []


def test_nothing_without_glibc(fresh, monkeypatch):
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    assert allocator.keep_freed_memory() == "not glibc"


def test_a_refused_mallopt_is_reported(fresh, monkeypatch):
    monkeypatch.setattr(fresh, "mallopt", lambda param, value: 0)
    assert allocator.keep_freed_memory() == "not glibc"


# Six 10 MiB tensors allocated, written and freed, again and again, like a training step's
# activations. With glibc's thresholds held at their starting values (128 KiB), each one gets its
# own pages, given back when it is freed, and faulted in anew the next time: 15,360 pages of
# 4 KiB a step. (Left to itself glibc raises them as it goes, and whether a process then faults
# varies from process to process: no fixed count to test against, and why `fit` does not leave
# it to chance.)
SCRIPT = textwrap.dedent("""
    import ctypes, resource, sys
    import torch
    from squeezestudy.core import allocator
    if sys.argv[1] == "kept":
        print(allocator.keep_freed_memory())
    else:
        libc = allocator._glibc()
        for param in (allocator.M_MMAP_THRESHOLD, allocator.M_TRIM_THRESHOLD):
            libc.mallopt(param, 128 << 10)
        print("held")
    def step():
        xs = [torch.ones(10 << 18) for _ in range(6)]
        del xs
    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
""")


def faults_a_step(mode: str) -> tuple[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in (*allocator.USER_VARIABLES, allocator.OPT_OUT)}
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return out[0], float(out[-1])


@pytest.mark.skipif(allocator._glibc() is None, reason="glibc only")
def test_freed_activations_are_not_faulted_in_again():
    held, kept = faults_a_step("held"), faults_a_step("kept")
    assert held[0] == "held" and kept[0] == "kept"
    assert held[1] > 15_000  # every 10 MiB buffer faulted in anew, every step
    assert kept[1] < 100

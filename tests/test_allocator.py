"""core.allocator: glibc's thresholds raised once per process, where glibc and the user allow it,
and what it is for: freed activations are not page-faulted in anew."""

from __future__ import annotations

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
    monkeypatch.setattr(allocator, "_state", {})
    for name in (*allocator.USER_VARIABLES, allocator.OPT_OUT):
        monkeypatch.delenv(name, raising=False)
    libc = FakeLibc()
    monkeypatch.setattr(allocator, "_glibc", lambda: libc)
    return libc


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
# activations: with glibc as it is, the 60 MiB freed at the top of its heap exceed its trim
# threshold (twice the largest chunk freed), go back to the kernel and are faulted in again.
SCRIPT = textwrap.dedent("""
    import resource, sys
    import torch
    from squeezestudy.core import allocator
    print(allocator.keep_freed_memory())
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


def faults_a_step(opt_out: bool) -> tuple[str, float]:
    env = {"SQUEEZESTUDY_MALLOC": "default"} if opt_out else {}
    import os

    env = {**{k: v for k, v in os.environ.items() if k not in (*allocator.USER_VARIABLES,
                                                                 allocator.OPT_OUT)}, **env}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, check=True, capture_output=True,
                         text=True).stdout.split()
    return out[0] if out[0] != "opted" else "opted out", float(out[-1])


@pytest.mark.skipif(allocator._glibc() is None, reason="glibc only")
def test_freed_activations_are_not_faulted_in_again():
    as_is, kept = faults_a_step(opt_out=True), faults_a_step(opt_out=False)
    assert as_is[0] == "opted out" and kept[0] == "kept"
    assert as_is[1] > 5_000  # 60 MiB is 15,360 pages of 4 KiB
    assert kept[1] < 100

"""One writer per run directory (issue 24): the lock of core/lock.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from squeezestudy.core.lock import LOCK, RunLockedError, holding


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_writer_is_named_and_stopped(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK).write_text(json.dumps({"pid": child.pid, "host": socket.gethostname(),
                                                 "doing": "trained"}))
        with pytest.raises(RunLockedError, match=rf"being trained by process {child.pid} \(host "), \
                holding(tmp_path):
            pytest.fail("entered a locked run directory")
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == child.pid  # not taken
    finally:
        child.kill()
        child.wait()


def test_the_lock_is_released_after_the_block_and_after_an_error(tmp_path):
    with holding(tmp_path) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK).exists()
    with pytest.raises(ZeroDivisionError), holding(tmp_path):
        raise ZeroDivisionError
    assert not (tmp_path / LOCK).exists()


def test_a_nested_hold_of_the_same_process_is_released_once(tmp_path):
    with holding(tmp_path):
        with holding(tmp_path):
            pass
        assert (tmp_path / LOCK).exists()  # the outer block still holds it
    assert not (tmp_path / LOCK).exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_message(tmp_path):
    pid = dead_pid()
    (tmp_path / LOCK).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    said = []
    with holding(tmp_path, echo=said.append) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert said == [f"{tmp_path}: taking over the lock of process {pid} (host {socket.gethostname()}), "
                    "which no longer runs"]


def test_a_lock_of_another_host_is_not_guessed_at(tmp_path):
    (tmp_path / LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere", "doing": "trained"}))
    with pytest.raises(RunLockedError, match=r"process 1 \(host elsewhere\).*if that process is gone, "
                                             r"delete .*\.lock"), holding(tmp_path):
        pass


def test_an_unreadable_lock_is_taken_over(tmp_path):
    (tmp_path / LOCK).write_text("{not json")
    said = []
    with holding(tmp_path, echo=said.append):
        pass
    assert said and "an unreadable lock" in said[0]

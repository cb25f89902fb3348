"""One writer per run directory: a lock file held while a run trains or its test split is opened.

The lock is `<run directory>/.lock`, created atomically (O_EXCL) and holding the writer's process
id and host. A second writer finds it and stops with `RunLockedError`, naming that process. A
lock left by a process that no longer runs (killed with SIGKILL, a machine that rebooted) is
taken over with a message when the process was on this host; a lock of another host cannot be
checked from here, and the error says how to remove it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

LOCK = ".lock"


class RunLockedError(RuntimeError):
    """Another process is writing the run directory."""


def _holder(path: Path) -> dict | None:
    """The lock's record, None when it is unreadable (being written, or damaged)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def _describe(holder: dict) -> str:
    since = holder.get("since")
    return (f"process {holder['pid']} (host {holder.get('host', '?')}"
            + (f", since {since}" if since else "") + ")")


@contextlib.contextmanager
def holding(directory: str | Path, doing: str = "trained",
            echo: Callable[[str], None] = print) -> Iterator[Path]:
    """Hold the run directory's lock for the block; RunLockedError if another process holds it."""
    directory = Path(directory)
    path = directory / LOCK
    me = {"pid": os.getpid(), "host": socket.gethostname(), "doing": doing,
          "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder is None:  # a writer between its open and its write, or a damaged file
                time.sleep(0.2)
                holder = _holder(path)
            if holder is not None and (holder["pid"], holder.get("host")) == (me["pid"], me["host"]):
                yield path  # this process holds it already (a nested block): the outer one releases it
                return
            if holder is not None and holder.get("host") != me["host"]:
                raise RunLockedError(
                    f"{directory} is being {holder.get('doing', 'written')} by {_describe(holder)}; "
                    f"wait for it to finish, or if that process is gone, delete {path}") from None
            if holder is not None and _alive(holder["pid"]):
                raise RunLockedError(
                    f"{directory} is being {holder.get('doing', 'written')} by {_describe(holder)}; "
                    "wait for it to finish (or stop it), or choose another run name") from None
            what = _describe(holder) if holder is not None else "an unreadable lock"
            echo(f"{directory}: taking over the lock of {what}, which no longer runs")
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise RunLockedError(f"{directory}: could not take its lock {path} (another writer keeps "
                             "taking it); try again")
    try:
        yield path
    finally:
        if (_holder(path) or {}).get("pid") == me["pid"]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

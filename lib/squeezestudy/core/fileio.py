"""Atomic writes: every file the study writes appears whole or not at all.

Each writer goes to a unique temporary file in the target's directory (parallel jobs writing
the same name do not collide), flushes it to disk, then renames it over the target. A reader
never sees a half-written file, and an interrupted write leaves the old file in place.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """Open a binary file that replaces `path` only when the block ends without an error."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, _FILE_MODE)  # mkstemp's 0600 would make results private to their writer
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # The rename itself is durable only once the directory entry is on disk (POSIX).
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_with(path: str | Path, writer: Callable[[BinaryIO], object]) -> None:
    """Atomically write what `writer(file)` writes: torch.save, np.savez, nbformat..."""
    with atomic_open(path) as f:
        writer(f)


def torch_save(obj, path: str | Path) -> None:
    import torch

    write_with(path, lambda f: torch.save(obj, f))

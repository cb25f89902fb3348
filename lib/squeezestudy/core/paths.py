"""The study's paths, in one place, and paths given by the user: shown relative to the
repository when inside it, and output directories checked before any work is done.

The root is the repository this package was installed from (editable install), or
$SQUEEZESTUDY_ROOT for a package installed elsewhere that should read and write a checkout.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

ROOT_ENV = "SQUEEZESTUDY_ROOT"
SMOKE_ENV = "SQUEEZESTUDY_SMOKE"  # set to 1: notebooks train tiny runs into outputs/smoke


def _root() -> Path:
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).expanduser().resolve()
    return Path(__file__).resolve().parents[3]  # lib/squeezestudy/core/paths.py -> the checkout


REPO_ROOT = _root()
README = REPO_ROOT / "README.md"
MANIFEST = REPO_ROOT / "runs.yaml"
DATA_DIR = REPO_ROOT / "data"
OUTPUTS = REPO_ROOT / "outputs"
RUNS_DIR = OUTPUTS / "runs"
SMOKE_RUNS_DIR = OUTPUTS / "smoke" / "runs"
WEIGHTS_DIR = OUTPUTS / "weights"
BENCHMARKS_DIR = OUTPUTS / "benchmarks"
FIGURES_DIR = OUTPUTS / "figures"
DEPTH_TRAIN_ACCURACY = OUTPUTS / "depth" / "train_accuracy.csv"  # notebook 09; checkpoints are not committed


def smoke_mode() -> bool:
    """True when $SQUEEZESTUDY_SMOKE is set to 1 (CI's nbval run): notebooks then train
    1 epoch on 2,000 images and write under outputs/smoke/, leaving full results alone."""
    return os.environ.get(SMOKE_ENV, "") not in ("", "0", "false")


class OutputDirError(ValueError):
    """An output directory that cannot be created or written to."""


def display_path(path: str | Path, root: str | Path = REPO_ROOT) -> str:
    """`path` relative to `root` (the repository) when it lies inside it, else absolute;
    never fails for a folder elsewhere, unlike Path.relative_to."""
    absolute = Path(path).expanduser().resolve()
    try:
        return str(absolute.relative_to(Path(root).resolve()))
    except ValueError:
        return str(absolute)


def ensure_writable_dir(path: str | Path, what: str = "output directory") -> Path:
    """Create `path` if needed and prove it writable by writing a file there; an
    OutputDirError naming it and saying what to do otherwise."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"{what} {path} is a file, not a directory; choose another path "
                             "or move the file away")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise OutputDirError(f"{what} {path} cannot be created: a part of the path is a file "
                             f"({err.strerror}); choose another path") from None
    except OSError as err:
        raise OutputDirError(f"{what} {path} cannot be created ({err.strerror}); choose a "
                             "directory you can write to") from None
    try:  # os.access is not enough: root, read-only mounts, ACLs
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=path)
    except OSError as err:
        raise OutputDirError(f"{what} {path} is not writable ({err.strerror}); fix its "
                             "permissions or choose another directory") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return path

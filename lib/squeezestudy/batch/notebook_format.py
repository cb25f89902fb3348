"""The one form every committed notebook is stored in: the bytes JupyterLab 4 writes when a
reader opens a notebook on the venv's kernel and saves it (or autosave does). Opening a
notebook then changes nothing on disk.

Lab sets the kernelspec's display name to the kernel's own ("Python 3 (ipykernel)" for
ipykernel's python3) and its server writes `nbformat.writes` (indent 1, sorted keys,
multi-line strings as lists) plus a final newline; papermill writes the same JSON without
that newline, keeps the display name it was given and writes whole floats as 1.0, which
the browser turns into 1. Consecutive prints of a cell are kept as one stream output, as Lab's
output area holds them. Papermill's input and output paths are stored relative to the
repository (no committed file names the folder a clone sits in). The batch runner normalises
what papermill wrote, and keeps a notebook's committed bytes when a re-execution changed nothing
but papermill's timestamps (`same_but_timings`); for committed files:

    python -m squeezestudy.batch.notebook_format [--check] PATH ...   (files or folders)
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from squeezestudy.core import fileio
from squeezestudy.core.paths import REPO_ROOT

# What ipykernel's kernel.json says, and so what JupyterLab writes, for the python3 kernel.
KERNELSPECS = {"python3": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}}


def _as_javascript_numbers(value):
    """Whole floats as ints: the browser's JSON has one number type, so Lab saves 1.0 as 1
    (papermill records parameters such as sr=1.0 as floats)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, dict):
        for key, item in value.items():
            value[key] = _as_javascript_numbers(item)
    elif isinstance(value, list):
        value[:] = [_as_javascript_numbers(item) for item in value]
    return value


def normal_form(text: str) -> str:
    """The notebook `text` as JupyterLab would save it."""
    nb = _as_javascript_numbers(nbformat.reads(text, as_version=nbformat.NO_CONVERT))
    papermill = nb.metadata.get("papermill")
    if isinstance(papermill, dict):
        for key in ("input_path", "output_path"):
            if isinstance(papermill.get(key), str):
                papermill[key] = relative_path(papermill[key])
    for cell in nb.cells:
        if cell.get("outputs"):
            cell.outputs = merged_streams(cell.outputs)
    spec = nb.metadata.get("kernelspec", {})
    if spec.get("name") in KERNELSPECS:
        nb.metadata["kernelspec"] = dict(KERNELSPECS[spec["name"]])
    out = nbformat.writes(nb, version=nbformat.NO_CONVERT)
    return out if out.endswith("\n") else out + "\n"


def merged_streams(outputs: list) -> list:
    """Consecutive stream outputs of one name as one, as JupyterLab's output area holds them: how
    a kernel happens to flush print() into chunks is timing, not content."""
    merged: list = []
    for output in outputs:
        last = merged[-1] if merged else None
        if (output.get("output_type") == "stream" and last is not None
                and last.get("output_type") == "stream" and last.get("name") == output.get("name")):
            last["text"] = last["text"] + output["text"]
        else:
            merged.append(output)
    return merged


def relative_path(path: str, root: str | Path = REPO_ROOT) -> str:
    """`path` relative to the repository when it lies inside it (as a POSIX path), else as given."""
    candidate = Path(path)
    if not candidate.is_absolute():
        return path
    try:
        return candidate.resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return path


TIMINGS = ("start_time", "end_time", "duration")


def _without_timings(text: str) -> dict:
    nb = nbformat.reads(text, as_version=nbformat.NO_CONVERT)
    for meta in [nb.metadata] + [cell.metadata for cell in nb.cells]:
        papermill = meta.get("papermill")
        if isinstance(papermill, dict):
            for key in TIMINGS:
                papermill.pop(key, None)
        meta.pop("execution", None)
    return nb


def same_but_timings(path: str | Path, text: str) -> bool:
    """True when the notebook at `path` differs from `text` in papermill's timestamps and
    durations at most: a re-execution that reproduced every output."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        return _without_timings(path.read_text(encoding="utf-8")) == _without_timings(text)
    except (ValueError, OSError):
        return False


def normalize(path: str | Path) -> bool:
    """Rewrite `path` in normal form if it is not; True when it changed."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    normal = normal_form(text)
    if normal == text:
        return False
    fileio.write_text(path, normal)
    return True


def notebooks(paths: list[str | Path]) -> list[Path]:
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts)
        else:
            found.append(p)
    return found


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    check = "--check" in argv
    paths = [a for a in argv if a != "--check"]
    if not paths or any(a.startswith("-") for a in paths):
        print("usage: python -m squeezestudy.batch.notebook_format [--check] PATH ...", file=sys.stderr)
        return 2
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        print(f"not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    off = []
    for nb in notebooks(paths):
        if check:
            text = nb.read_text(encoding="utf-8")
            if normal_form(text) != text:
                off.append(nb)
        elif normalize(nb):
            off.append(nb)
    verb = "not in normal form" if check else "normalised"
    for nb in off:
        print(f"{verb}: {nb}")
    return 1 if check and off else 0


if __name__ == "__main__":
    sys.exit(main())

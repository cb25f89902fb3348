"""Every committed notebook is stored as JupyterLab saves it, so opening one changes nothing.
(.ci/lab_check.py checks the same in a real JupyterLab in headless Chromium.)"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from squeezestudy.batch import notebook_format
from squeezestudy.core.paths import REPO_ROOT


def committed_notebooks() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every notebook there
        return notebook_format.notebooks([REPO_ROOT / "notebooks", REPO_ROOT / "outputs"])
    return [REPO_ROOT / p for p in out]


NOTEBOOKS = committed_notebooks()


def test_the_study_has_its_notebooks():
    numbered = sorted(p.name[:2] for p in NOTEBOOKS if p.parent == REPO_ROOT / "notebooks")
    assert numbered == [f"{i:02d}" for i in range(1, 13)]  # 01-12, none missing


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_committed_notebook_is_in_normal_form(path):
    text = path.read_text(encoding="utf-8")
    assert notebook_format.normal_form(text) == text, (
        f"{path} is not stored as JupyterLab saves it: python -m squeezestudy.batch.notebook_format {path}")


def test_the_jupyter_server_saves_every_committed_notebook_unchanged(tmp_path):
    """What Lab's save does on the server side: GET the contents model, PUT it back."""
    from jupyter_server.services.contents.filemanager import FileContentsManager

    manager = FileContentsManager(root_dir=str(tmp_path))
    for path in NOTEBOOKS:
        shutil.copy(path, tmp_path / "nb.ipynb")
        model = manager.get("nb.ipynb", content=True, type="notebook")
        manager.save({"type": "notebook", "format": "json", "content": model["content"]}, "nb.ipynb")
        assert (tmp_path / "nb.ipynb").read_bytes() == path.read_bytes(), path


def papermill_like(tmp_path, **params) -> Path:
    """A notebook as papermill writes it: display name "Python 3", no final newline."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["papermill"] = {"parameters": params}
    path = tmp_path / "papermill.ipynb"
    path.write_text(nbformat.writes(nb), encoding="utf-8")
    return path


def test_normal_form_is_what_lab_writes(tmp_path):
    path = papermill_like(tmp_path, sr=1.0, lr=0.003)
    assert notebook_format.normalize(path)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n")
    nb = nbformat.reads(text, as_version=4)
    assert nb.metadata.kernelspec.display_name == "Python 3 (ipykernel)"
    assert '"sr": 1\n' in text and '"lr": 0.003' in text  # the browser has one number type
    assert not notebook_format.normalize(path)  # already normal: left alone


def test_cli_check_and_usage(tmp_path, capsys):
    path = papermill_like(tmp_path)
    assert notebook_format.main(["--check", str(path)]) == 1
    assert "not in normal form" in capsys.readouterr().out
    assert notebook_format.main([str(tmp_path)]) == 0
    assert notebook_format.main(["--check", str(path)]) == 0
    assert notebook_format.main([]) == 2
    assert notebook_format.main([str(tmp_path / "missing.ipynb")]) == 2




def test_nbval_markers_are_cell_tags_not_comments_a_reader_sees():
    """nbval reads the `nbval-check-output` tag; a `# NBVAL_...` comment would show in every
    checked cell, on the site too."""
    import json

    for path in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        assert not [c for c in cells if "NBVAL" in "".join(c["source"])], path.name
        assert any("nbval-check-output" in c["metadata"].get("tags", []) for c in cells), path.name

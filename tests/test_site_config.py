"""The rendered site's config (myst.yml): every notebook in order, and a theme built here."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def toc_files(entries: list[dict]) -> list[str]:
    files = []
    for entry in entries:
        if "file" in entry:
            files.append(entry["file"])
        files += toc_files(entry.get("children", []))
    return files


def test_toc_lists_readme_then_every_notebook_in_order_then_the_docs():
    config = yaml.safe_load((REPO / "myst.yml").read_text())
    notebooks = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "notebooks").glob("*.ipynb"))
    files = toc_files(config["project"]["toc"])
    assert files[:len(notebooks) + 1] == ["README.md", *notebooks]
    docs = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md"))
    assert sorted(files[len(notebooks) + 1:]) == docs  # every page of docs/ on the site


def test_site_uses_the_locally_built_theme():
    """A template name (e.g. book-theme) would be downloaded at build time; ours is a path
    that `make theme` fills."""
    config = yaml.safe_load((REPO / "myst.yml").read_text())
    makefile = (REPO / "Makefile").read_text()
    theme_dir = re.search(r"^THEME := (\S+)$", makefile, re.M).group(1)
    assert config["site"]["template"] == theme_dir
    assert (REPO / "site" / "book-theme" / "template.yml").is_file()


def test_site_check_expects_each_notebooks_image_outputs(tmp_path):
    """The site check's least image count per page comes from the sources: a page that lost a
    figure fails it even when every image it shows loads."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("site_check", REPO / ".ci" / "site_check.py")
    site_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(site_check)
    files = toc_files(yaml.safe_load((REPO / "myst.yml").read_text())["project"]["toc"])
    pages = [{"slug": f"page-{i}"} for i in range(1, len(files))]
    (tmp_path / "config.json").write_text(json.dumps({"projects": [{"pages": pages}]}))
    counts = site_check.expected_figures(tmp_path)
    assert list(counts) == ["/", *(f"/page-{i}" for i in range(1, len(files)))]
    training = files.index("notebooks/05_training.ipynb")
    cells = json.loads((REPO / files[training]).read_text())["cells"]
    pngs = sum("image/png" in o.get("data", {}) for c in cells for o in c.get("outputs", []))
    assert counts[f"/page-{training}"] == pngs > 0
    pages.pop()  # a site of another toc: no expectation rather than a wrong one
    (tmp_path / "config.json").write_text(json.dumps({"projects": [{"pages": pages}]}))
    assert site_check.expected_figures(tmp_path) == {}

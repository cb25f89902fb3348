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


def test_toc_lists_readme_then_every_notebook_in_order():
    config = yaml.safe_load((REPO / "myst.yml").read_text())
    notebooks = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "notebooks").glob("*.ipynb"))
    assert toc_files(config["project"]["toc"]) == ["README.md", *notebooks]


def test_site_uses_the_locally_built_theme():
    """A template name (e.g. book-theme) would be downloaded at build time; ours is a path
    that `make theme` fills."""
    config = yaml.safe_load((REPO / "myst.yml").read_text())
    makefile = (REPO / "Makefile").read_text()
    theme_dir = re.search(r"^THEME := (\S+)$", makefile, re.M).group(1)
    assert config["site"]["template"] == theme_dir
    assert (REPO / "site" / "book-theme" / "template.yml").is_file()

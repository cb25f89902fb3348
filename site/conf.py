"""The rendered site (`make site`): Sphinx with myst-nb and the book theme, all from PyPI.

The source is the repository: README.md (the landing page), the committed notebooks with their
outputs (never executed here) and docs/*.md, in the order of site/_toc.yml. The build downloads
nothing and the pages request nothing off the machine (.ci/site_check.py checks both)."""

from __future__ import annotations

import shutil
from pathlib import Path

project = "SqueezeNet, studied in notebooks"
html_title = project
author = "the squeezestudy authors"
copyright = "2026, " + author

extensions = ["myst_nb", "sphinx_external_toc"]
external_toc_path = "site/_toc.yml"
root_doc = "README"
include_patterns = ["README.md", "notebooks/*.ipynb", "docs/*.md", "outputs/gpu/throughput.md",
                    "outputs/benchmarks/*/throughput.md", "outputs/benchmarks/archive/*/throughput.md"]
exclude_patterns = ["_build", ".venv", "data", "site", "tests", "lib"]

nb_execution_mode = "off"  # the committed outputs are the results; the site never re-runs them
nb_output_stderr = "show"
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3  # README and docs link to their sections as #slug
suppress_warnings = ["mystnb.unknown_mime_type"]

html_theme = "sphinx_book_theme"
html_static_path = ["_static"]
html_css_files = ["study.css"]
html_show_sourcelink = False
html_copy_source = False
html_theme_options = {
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "use_repository_button": False,
}
html_last_updated_fmt = None


def _landing_page(app, exception) -> None:
    """The landing page served at / (a static server serves index.html for a folder)."""
    if exception is None and app.builder.format == "html":
        out = Path(app.outdir)
        shutil.copyfile(out / "README.html", out / "index.html")


def setup(app):
    app.connect("build-finished", _landing_page)

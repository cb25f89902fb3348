"""The rendered site's config (site/): every notebook in order, built from packages only."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SITE = REPO / "site"


def site_check():
    spec = importlib.util.spec_from_file_location("site_check", REPO / ".ci" / "site_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_toc_lists_readme_then_every_notebook_in_order_then_the_docs():
    files = site_check().toc_files()
    notebooks = sorted(p.relative_to(REPO).with_suffix("").as_posix()
                       for p in (REPO / "notebooks").glob("*.ipynb"))
    assert files[:len(notebooks) + 1] == ["README", *notebooks]
    docs = sorted(p.relative_to(REPO).with_suffix("").as_posix() for p in (REPO / "docs").glob("*.md"))
    rest = files[len(notebooks) + 1:]
    assert sorted(f for f in rest if f.startswith("docs/")) == docs  # every page of docs/ on the site
    assert all(f.startswith(("docs/", "outputs/")) for f in rest)


def test_every_page_of_the_toc_is_a_source_the_build_reads():
    """conf.py's include_patterns must take in each file of the toc (else Sphinx drops it)."""
    conf = ast.parse((SITE / "conf.py").read_text())
    patterns = next(ast.literal_eval(n.value) for n in conf.body if isinstance(n, ast.Assign)
                    and any(getattr(t, "id", "") == "include_patterns" for t in n.targets))
    checker = site_check()
    for file in checker.toc_files():
        source = checker.source_of(file).relative_to(REPO)
        assert any(source.match(p) for p in patterns), f"{source} is not in include_patterns"


def test_site_is_built_from_packages_only():
    """No theme or other third-party source in the repository: the site's folder holds our config
    and stylesheet; Sphinx, myst-nb and the book theme come pinned from the registry."""
    assert sorted(p.relative_to(SITE).as_posix() for p in SITE.rglob("*") if p.is_file()) == [
        "_static/study.css", "_toc.yml", "conf.py"]
    pins = (REPO / "constraints.txt").read_text().lower().replace("_", "-")
    for package in ("sphinx", "myst-nb", "sphinx-book-theme", "sphinx-external-toc"):
        assert re.search(rf"^{package}==", pins, re.M), f"{package} is not pinned in constraints.txt"
    makefile = (REPO / "Makefile").read_text()
    build = r"^site: env\n\t\$\(VENV\)/bin/sphinx-build .*-W .*-c site \. _build/html$"
    assert re.search(build, makefile, re.M)
    assert not any((REPO / name).exists() for name in ("myst.yml", "package.json", "site/book-theme"))
    conf = (SITE / "conf.py").read_text()
    assert 'nb_execution_mode = "off"' in conf  # the committed outputs, never re-run


def test_site_check_expects_each_notebooks_image_outputs(tmp_path):
    """The site check's least image count per page comes from the sources: a page that lost a
    figure fails it even when every image it shows loads."""
    checker = site_check()
    counts = checker.expected_figures()
    files = checker.toc_files()
    assert list(counts) == ["/", *(f"/{f}.html" for f in files[1:])]
    cells = json.loads((REPO / "notebooks" / "05_training.ipynb").read_text())["cells"]
    pngs = sum("image/png" in o.get("data", {}) for c in cells for o in c.get("outputs", []))
    assert counts["/notebooks/05_training.html"] == pngs > 0
    assert counts["/"] == (REPO / "README.md").read_text().count("![") > 0
    toc = tmp_path / "_toc.yml"
    toc.write_text(yaml.safe_dump({"root": "README", "parts": [{"chapters": [{"file": "docs/missing"}]}]}))
    try:
        checker.expected_figures(toc)
    except FileNotFoundError as err:
        assert "docs/missing" in str(err)
    else:
        raise AssertionError("a toc entry without a source was not reported")


def test_the_landing_page_has_every_name_the_site_serves_it_under():
    checker = site_check()
    assert [checker.page_path(p) for p in ("/", "/index.html", "/README.html", "")] == ["/"] * 4
    assert checker.page_path("/docs/results.html") == "/docs/results.html"
    assert checker.is_page("/docs/results.html") and not checker.is_page("/_downloads/x/comparison.csv")


def test_the_checks_server_is_quiet_only_when_the_browser_hangs_up(capsys):
    """A browser that drops a linked file mid-transfer is not a fault of the site (CI's log used to
    carry a BrokenPipeError traceback from it); any other error of the server is still printed."""
    import http.server

    server = site_check().QuietServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    try:
        for error, printed in ((BrokenPipeError(32, "Broken pipe"), False),
                               (ConnectionResetError(104, "reset"), False), (ValueError("a fault"), True)):
            try:
                raise error
            except Exception:
                server.handle_error(None, ("127.0.0.1", 1))
            assert ("Traceback" in capsys.readouterr().err) is printed, error
    finally:
        server.server_close()

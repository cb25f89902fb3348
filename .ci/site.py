"""The rendered study: Jupyter Book 2 (MyST) over the committed notebooks and README.

    python .ci/site.py build   # _build/theme (once), then _build/html; nothing is executed
    python .ci/site.py check   # every page in headless Chromium: loads, images load, links resolve

The book theme (a Remix app) is built from its vendored source in site/theme with the npm
packages pinned by site/theme/package-lock.json, so the build downloads nothing from anywhere
but the npm registry (MyST would otherwise fetch the theme from GitHub at build time). The
built theme is reused while site/theme is unchanged.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
THEME_SOURCE = REPO / "site" / "theme"
BUILD = REPO / "_build"
THEME = BUILD / "theme"
HTML = BUILD / "html"
CHECK = BUILD / "site-check"


def run(cmd: list[str], cwd: Path, env: dict | None = None) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True, env=env)


def source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in THEME_SOURCE.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(THEME_SOURCE)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def build_theme() -> None:
    stamp = THEME / ".source-sha256"
    wanted = source_hash()
    if stamp.is_file() and stamp.read_text() == wanted and (THEME / "build" / "index.js").is_file():
        print(f"theme: {THEME} is up to date")
        return
    shutil.rmtree(THEME, ignore_errors=True)
    shutil.copytree(THEME_SOURCE, THEME)
    npm = shutil.which("npm")
    if not npm:
        raise SystemExit("npm not found: the site needs Node.js 18+ (apt-get install -y nodejs npm)")
    run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], THEME)
    run([npm, "exec", "--", "tailwindcss", "-m", "-i", "./styles/app.css", "-o", "app/styles/app.css"], THEME)
    run([npm, "exec", "--", "remix", "build"], THEME)
    stamp.write_text(wanted)


def build() -> int:
    build_theme()
    shutil.rmtree(HTML, ignore_errors=True)
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    # BASE_URL empty: the pages link to /... and are served from the root of _build/html
    env = dict(os.environ, BASE_URL="")
    run([str(jupyter_book), "build", "--html", "--ci"], REPO, env)
    pages = sorted(HTML.rglob("*.html"))
    print(f"site: {len(pages)} HTML files in {HTML}")
    return 0 if pages else 1


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def http_status(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        return err.code, ""


PAGE_REPORT = """(async () => {
  const images = [...document.images];
  await Promise.allSettled(images.map(img => { img.loading = 'eager'; return img.decode(); }));
  return {
    title: document.title,
    h1: (document.querySelector('h1') || {}).textContent || '',
    images: images.map(img => ({src: img.currentSrc || img.src, ok: img.complete && img.naturalWidth > 0})),
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    ids: [...document.querySelectorAll('[id]')].map(e => e.id),
    math: document.querySelectorAll('.katex, math').length,
    tables: document.querySelectorAll('table').length,
  };
})()"""


def check() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from cdp import Browser

    if not (HTML / "index.html").is_file():
        raise SystemExit(f"{HTML / 'index.html'} not found: build the site first (make site)")
    shutil.rmtree(CHECK, ignore_errors=True)
    CHECK.mkdir(parents=True)
    server, root = serve(HTML)
    problems: list[str] = []
    seen: dict[str, dict] = {}
    try:
        with Browser(1280, 900) as browser:
            page = browser.new_page()
            queue = [root + "/"]
            while queue:
                url = queue.pop(0)
                if url in seen:
                    continue
                status, kind = http_status(url)
                if status != 200 or "html" not in kind:
                    problems.append(f"{url}: HTTP {status} {kind}")
                    seen[url] = {}
                    continue
                page.navigate(url)
                time.sleep(0.3)  # hydration
                report = page.evaluate(PAGE_REPORT)
                seen[url] = report
                if url == root + "/":
                    page.screenshot(CHECK / "landing.png")
                broken = [i["src"] for i in report["images"] if not i["ok"]]
                problems += [f"{url}: image does not load: {src}" for src in broken]
                print(f"{url[len(root):]}: '{report['h1'][:50]}', {len(report['images'])} images "
                      f"({len(broken)} broken), {report['tables']} tables, {report['math']} math", flush=True)
                for href in report["links"]:
                    target, _, fragment = href.partition("#")
                    if not target.startswith(root):
                        continue
                    path = urllib.parse.urlparse(target).path
                    if "." in path.rsplit("/", 1)[-1] and not path.endswith(".html"):
                        status, _ = http_status(target)  # a file: it must be there
                        if status != 200:
                            problems.append(f"{url}: broken link to {href} (HTTP {status})")
                        continue
                    queue.append(target if target.endswith("/") or path.endswith(".html") else target)
            page.close()
        for url, report in seen.items():  # fragments of links between pages must exist there
            for href in report.get("links", []):
                target, _, fragment = href.partition("#")
                if fragment and target in seen and seen[target] and fragment not in seen[target]["ids"]:
                    problems.append(f"{url}: link to a missing anchor {href}")
    finally:
        server.shutdown()
    pages = [u for u, r in seen.items() if r]
    summary = {"pages": len(pages), "images": sum(len(r["images"]) for r in seen.values() if r),
               "problems": problems}
    (CHECK / "report.json").write_text(json.dumps({"summary": summary, "pages": seen}, indent=1))
    for problem in problems:
        print("PROBLEM", problem)
    print(f"site check: {summary['pages']} pages, {summary['images']} images, {len(problems)} problems; "
          f"screenshot {CHECK / 'landing.png'}")
    return 1 if problems or len(pages) < 11 else 0


if __name__ == "__main__":
    commands = {"build": build, "check": check}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        print("usage: python .ci/site.py build|check", file=sys.stderr)
        sys.exit(2)
    sys.exit(commands[sys.argv[1]]())

"""Open the rendered site (`make site`, in _build/html) in headless Chromium the way a reader does:
serve it locally, crawl every internal link from the landing page, and on every page check that
it loads (its title, no script error, no failed or off-machine request), that every image has
loaded (naturalWidth > 0) and the article shows at least as many as its source has (a notebook's
image outputs, README's markdown images), and that every internal link leads to a page or file
that exists (and to an element with that id, for a #fragment). The sidebar must list the toc of
site/_toc.yml in order. At 1366 px, the width of a common laptop, neither a page nor any notebook
cell (code or output) may scroll sideways. A screenshot of the landing page is kept as
_build/site-landing.png (a CI artifact).

    .venv/bin/python .ci/site_check.py [SITE_DIR]       (default: _build/html)
    .venv/bin/python .ci/site_check.py --serve          (only serve it, to read it in a browser)

Exits 1 listing every problem found.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urldefrag, urlsplit

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cdp import Browser, CDPError  # noqa: E402

from squeezestudy.core import fileio  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "_build" / "site-landing.png"

# Everything the checks need from a loaded page, after its images had their chance to load
# (lazy images are switched to eager, since a headless window never scrolls to them).
INSPECT = """(async () => {
  const images = Array.from(document.images);
  await Promise.all(images.map(img => {
    if (img.complete && img.naturalWidth > 0) return null;
    img.loading = 'eager';
    return new Promise(r => { img.addEventListener('load', r); img.addEventListener('error', r);
                              setTimeout(r, 20000); if (img.complete) r(); });
  }));
  const article = document.querySelector('article') || document.documentElement;
  return {
    title: document.title,
    h1: (document.querySelector('h1') || {}).innerText || '',
    ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
    images: images.map(img => ({src: img.currentSrc || img.src, width: img.naturalWidth})),
    figures: article.querySelectorAll('img').length,
    tables: article.querySelectorAll('table').length,
    math: article.querySelectorAll('.katex').length,
    toc: Array.from(document.querySelectorAll('nav.bd-docs-nav a.reference.internal')).map(a => a.href),
    noCss: getComputedStyle(document.documentElement).getPropertyValue('--pst-color-primary').trim() === '',
    pageScrollsSideways: document.documentElement.scrollWidth > window.innerWidth + 1,
    cellsScrollingSideways: Array.from(article.querySelectorAll('div.cell, div.cell *'))
      .filter(e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible')
      .length,
  };
})()"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Python's own static server (what a reader runs: `python -m http.server`), without its log."""

    def log_message(self, *args) -> None:
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    """It says nothing when the browser hangs up mid-transfer (a linked file it only checks):
    that is the client's choice, not a fault of the site. Any other error is printed."""

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(QuietHandler, directory=str(site))
    server = QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


TOC = REPO / "site" / "_toc.yml"
LANDING = ("/", "/index.html", "/README.html")  # the landing page is README, also served at /


def toc_files(toc: Path = TOC) -> list[str]:
    """The site's sources in the order of its toc (without suffix): the root, then every chapter."""
    config = yaml.safe_load(toc.read_text())
    return [config["root"]] + [c["file"] for part in config.get("parts", []) for c in part["chapters"]]


def page_path(path: str) -> str:
    """A site path as the checks name it: the landing page's names as /."""
    return "/" if path in LANDING or path == "" else path


def expected_toc(toc: Path = TOC) -> list[str]:
    """The pages' paths in the order of the toc."""
    return ["/"] + [f"/{f}.html" for f in toc_files(toc)[1:]]


def source_of(file: str) -> Path:
    for suffix in (".md", ".ipynb"):
        if (REPO / (file + suffix)).is_file():
            return REPO / (file + suffix)
    raise FileNotFoundError(f"{file} in the toc has no .md or .ipynb source")


def expected_figures(toc: Path = TOC) -> dict[str, int]:
    """Each page's least number of images, from its source: a notebook's image outputs, a markdown
    page's images. A page that renders fewer lost a figure, even when every image it does show
    loads."""
    counts = {}
    for path, file in zip(expected_toc(toc), toc_files(toc), strict=True):
        source = source_of(file)
        text = source.read_text()
        if source.suffix == ".ipynb":
            outputs = [o for c in json.loads(text)["cells"] for o in c.get("outputs", [])]
            counts[path] = sum(any(k.startswith("image/") for k in o.get("data", {})) for o in outputs)
        else:
            counts[path] = text.count("![")
    return counts


def is_page(path: str) -> bool:
    """A page of the site (Sphinx writes each as NAME.html) rather than a file to download."""
    return path in LANDING or path.endswith(".html")


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def network_problems(events: list[dict], origin: str) -> list[str]:
    problems = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith((origin, "data:", "blob:", "about:")):
                problems.append(f"requested off the machine: {url}")
        elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
            if not params["response"]["url"].endswith("/favicon.ico"):
                problems.append(f"HTTP {params['response']['status']}: {params['response']['url']}")
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            problems.append(f"failed to load ({params.get('errorText')}): request {params['requestId']}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            problems.append("script error: " + (details.get("exception", {}).get("description")
                                                or details.get("text", "?")).splitlines()[0])
    return problems


def inspect(page) -> dict:
    """INSPECT once the page has settled (a failed look is retried: a page that is still loading
    may briefly have no document)."""
    for attempt in range(5):
        try:
            page.wait_until("document.readyState === 'complete' && !!document.querySelector('h1')", 30)
            return page.evaluate(INSPECT, timeout=120)
        except CDPError:
            if attempt == 4:
                raise
            time.sleep(1)


def check(site: Path) -> int:
    server, origin = serve(site)
    problems: list[str] = []
    pages: dict[str, dict] = {}
    queue, seen = ["/"], {"/"}
    wide: list[str] = []
    files_checked: set[str] = set()
    t0 = time.monotonic()
    try:
        with Browser(1366, 900) as browser:
            page = browser.new_page()
            page.call("Network.enable")
            while queue:
                path = queue.pop(0)
                try:
                    page.navigate(origin + path)
                    info = inspect(page)
                except CDPError as e:
                    problems.append(f"{path}: did not load: {e}")
                    continue
                time.sleep(0.2)
                page.evaluate("1")  # collects the events that arrived meanwhile
                problems += [f"{path}: {p}" for p in network_problems(page.events, origin)]
                if path == "/":
                    data = page.call("Page.captureScreenshot", format="png")["data"]
                    fileio.write_bytes(SCREENSHOT, base64.b64decode(data))
                pages[path] = info
                if not info["h1"] or info["noCss"]:
                    problems.append(f"{path}: no heading or no stylesheet (title {info['title']!r})")
                if info["pageScrollsSideways"] or info["cellsScrollingSideways"]:
                    wide.append(path)
                    problems.append(f"{path}: scrolls sideways at 1366 px (the page: "
                                    f"{info['pageScrollsSideways']}, notebook cells: "
                                    f"{info['cellsScrollingSideways']})")
                for image in info["images"]:
                    if image["width"] <= 0:
                        problems.append(f"{path}: image did not load: {image['src']}")
                for href in info["links"]:
                    url, _ = urldefrag(href)
                    if not url.startswith(origin):
                        continue
                    target = urlsplit(url).path or "/"
                    if is_page(target):
                        target = page_path(target)
                        if target not in seen:
                            seen.add(target)
                            queue.append(target)
                    elif target not in files_checked:
                        files_checked.add(target)
                        if http_status(origin + target) != 200:
                            problems.append(f"{path}: broken link to file {target}")
            page.close()
    finally:
        server.shutdown()

    links = fragments = 0
    for path, info in pages.items():
        for href in info["links"]:
            if not href.startswith(origin):
                continue
            links += 1
            url, fragment = urldefrag(href)
            target = urlsplit(url).path or "/"
            if not is_page(target):
                continue
            target = page_path(target)
            if target not in pages or not pages[target]["h1"]:
                problems.append(f"{path}: broken link to {href[len(origin):]}")
            elif fragment:
                fragments += 1
                if fragment not in pages[target]["ids"]:
                    problems.append(f"{path}: link to a missing anchor {href[len(origin):]}")
    toc = expected_toc()
    sidebar = [page_path(urlsplit(urldefrag(href)[0]).path) for href in pages["/"]["toc"]]
    if sidebar != toc:
        problems.append(f"sidebar order {sidebar} is not the toc's {toc}")
    missing = [p for p in toc if p not in pages]
    if missing:
        problems.append(f"pages of the toc never reached by a link: {missing}")

    for path, least in expected_figures().items():
        if path in pages and pages[path]["figures"] < least:
            problems.append(f"{path}: {pages[path]['figures']} images in the article, its source "
                            f"has {least}")

    figures = sum(i["figures"] for i in pages.values())
    print(f"{len(pages)} pages loaded, {sum(len(i['images']) for i in pages.values())} images "
          f"({figures} in the articles), {sum(i['tables'] for i in pages.values())} tables, "
          f"{sum(i['math'] for i in pages.values())} math elements; {links} internal links "
          f"({fragments} to anchors) and {len(files_checked)} linked files checked; "
          f"sidebar: {len(sidebar)} entries in toc order: {sidebar == toc}; "
          f"pages scrolling sideways at 1366 px: {len(wide)} "
          f"({time.monotonic() - t0:.1f} s)")
    print(f"landing page screenshot: {SCREENSHOT.relative_to(REPO)}")
    if problems:
        print(f"{len(problems)} problem(s):", *problems, sep="\n  ")
        return 1
    return 0


def main(argv: list[str]) -> int:
    serve_only = "--serve" in argv
    argv = [a for a in argv if a != "--serve"]
    site = Path(argv[0]) if argv else REPO / "_build" / "html"
    if not (site / "index.html").is_file():
        print(f"no built site at {site}: run `make site` first", file=sys.stderr)
        return 2
    if serve_only:
        server, origin = serve(site)
        print(f"serving {site} at {origin}/ (Ctrl-C to stop)")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            server.shutdown()
        return 0
    return check(site)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Open every committed notebook in the venv's JupyterLab, in headless Chromium, the way a
reader does: the notebook opens on the venv's kernel, the kernel connects (which is when Lab
rewrites the kernelspec and language_info metadata), and the frontend saves it, as autosave
would. Then `git status` must show no change to any notebook.

    .venv/bin/python .ci/lab_check.py [NOTEBOOK ...]     (default: every committed .ipynb)

Exits 1 listing the notebooks Lab changed (the diff is left in the tree to look at).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cdp import Browser  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

OPEN_AND_SAVE = """(async () => {
  const app = window.jupyterapp;
  const widget = await app.commands.execute('docmanager:open', {path: %s, factory: 'Notebook'});
  await widget.context.ready;
  await widget.sessionContext.ready;
  const kernel = widget.sessionContext.session.kernel;
  await kernel.info;                       // language_info arrives with the kernel's info reply
  const deadline = Date.now() + 60000;
  while (!widget.model.getMetadata('language_info') && Date.now() < deadline)
    await new Promise(r => setTimeout(r, 100));
  await new Promise(r => setTimeout(r, 500)); // let the metadata updates settle
  const dirty = widget.context.model.dirty;
  await widget.context.save();
  const kernelName = kernel.name;
  await widget.sessionContext.shutdown();
  widget.dispose();
  return {dirty, kernelName};
})()"""


# A training run's progress bar: with ipywidgets, tqdm.auto draws a widget, not a TqdmWarning.
PROGRESS_BAR = """(async () => {
  const app = window.jupyterapp;
  const widget = await app.commands.execute('docmanager:open', {path: %s, factory: 'Notebook'});
  await widget.context.ready;
  await widget.sessionContext.ready;
  await app.commands.execute('notebook:run-all-cells');
  const deadline = Date.now() + 60000;
  const done = () => widget.model.cells.get(0).executionCount !== null &&
                     widget.sessionContext.session.kernel.status === 'idle';
  while (!done() && Date.now() < deadline) await new Promise(r => setTimeout(r, 200));
  await new Promise(r => setTimeout(r, 1000));
  const node = widget.content.node;
  const text = node.innerText;
  const result = {bars: node.querySelectorAll('.jp-OutputArea-output .widget-hprogress .progress-bar').length,
                  warning: text.includes('TqdmWarning') || text.includes('IProgress not found'),
                  text: text.slice(0, 300)};
  await widget.sessionContext.shutdown();
  widget.dispose();
  return result;
})()"""


def progress_bar_notebook() -> str:
    """A scratch notebook under the ignored _build/ that shows a tqdm.auto bar."""
    import nbformat

    path = REPO / "_build" / "lab-check" / "progress.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("from tqdm.auto import tqdm\nfor _ in tqdm(range(3)):\n    pass")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nbformat.write(nb, path)
    return str(path.relative_to(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def committed_notebooks() -> list[str]:
    out = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=REPO, capture_output=True, text=True, check=True)
    return out.stdout.split()


def start_lab(port: int, token: str, home: Path) -> subprocess.Popen:
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"))
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={REPO}",
           "--allow-root", "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    with open(home / "lab.log", "wb") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"jupyter lab exited early; see {home / 'lab.log'}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=5):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit("jupyter lab did not answer in 120 s")


def main(argv: list[str]) -> int:
    notebooks = argv or committed_notebooks()
    home = Path(tempfile.mkdtemp(prefix="lab-check-"))
    port, token = free_port(), secrets.token_hex(16)
    lab = start_lab(port, token, home)
    changed = []
    try:
        with Browser(1400, 900) as browser:
            page = browser.new_page()
            page.navigate(f"http://127.0.0.1:{port}/lab?token={token}&reset", timeout=120)
            page.wait_until("window.jupyterapp !== undefined", 120)
            page.evaluate("window.jupyterapp.restored")
            for nb in notebooks:
                t0 = time.monotonic()
                result = page.evaluate(OPEN_AND_SAVE % json.dumps(nb), timeout=180)
                diff = subprocess.run(["git", "diff", "--stat", "--", nb], cwd=REPO, capture_output=True,
                                      text=True, check=True).stdout.strip()
                if diff:
                    changed.append(nb)
                print(f"{nb}: kernel {result['kernelName']}, dirty after opening: {result['dirty']}, "
                      f"{'CHANGED' if diff else 'unchanged'} after save ({time.monotonic() - t0:.1f} s)",
                      flush=True)
            bar = page.evaluate(PROGRESS_BAR % json.dumps(progress_bar_notebook()), timeout=180)
            print(f"tqdm.auto in Lab: {bar['bars']} widget progress bar(s), "
                  f"TqdmWarning shown: {bar['warning']}")
            if not bar["bars"] or bar["warning"]:
                print(bar["text"])
                changed.append("(tqdm.auto showed no widget progress bar)")
            page.close()
    finally:
        lab.terminate()
        try:
            lab.wait(20)
        except subprocess.TimeoutExpired:
            lab.kill()
    if changed:
        print(f"JupyterLab rewrote {len(changed)} of {len(notebooks)} notebooks:", *changed, sep="\n  ")
        return 1
    print(f"{len(notebooks)} notebooks opened and saved in JupyterLab; none changed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

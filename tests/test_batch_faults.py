"""Ctrl-C (or SIGTERM) during a real batch: the queued runs cancelled, the running ones
interrupted, the summary printed, exit 130 (143), and no process of the batch left behind."""

import json
import os
import re
import signal
import subprocess
import sys
import threading

import psutil
import pytest

from squeezestudy.batch.manifest import check, load_manifest
from squeezestudy.core.paths import REPO_ROOT

from .conftest import default_sigint


@pytest.mark.parametrize(("signum", "whole_group", "code"), [
    (signal.SIGINT, True, 130),  # Ctrl-C in a terminal: the whole process group
    (signal.SIGTERM, False, 143),  # `kill PID`, a job scheduler: the batch process alone
], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_the_smoke_batch_and_leaves_no_process(signum, whole_group, code):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "lib"), "MPLBACKEND": "Agg"}
    proc = subprocess.Popen([sys.executable, "-m", "squeezestudy.cli", "batch", "--profile", "smoke",
                             "--jobs", "2", "--force"], cwd=REPO_ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=default_sigint)
    lines: list[str] = []
    first_done = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if re.match(r"\[1/\d+\] ok ", line):
                first_done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert first_done.wait(timeout=600), "\n".join(lines)
        batch = psutil.Process(proc.pid)
        descendants = batch.children(recursive=True)  # workers and their kernels
        assert any("ipykernel" in " ".join(p.cmdline()) for p in descendants if p.is_running())
        if whole_group:
            os.killpg(proc.pid, signum)
        else:
            os.kill(proc.pid, signum)
        assert proc.wait(timeout=180) == code, "\n".join(lines)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    reader.join(timeout=10)
    output = "\n".join(lines)
    assert "Traceback" not in output, output
    assert "interrupted: cancelling the queued runs" in output
    summary = lines[-1]
    counts = dict((status, int(n)) for n, status in re.findall(r"(\d+) (\w+)", summary.split(";")[0]))
    smoke = len(check(load_manifest(REPO_ROOT / "runs.yaml"), REPO_ROOT)["smoke"])
    assert sum(counts.values()) == smoke and counts["ok"] >= 1 and counts.get("cancelled", 0) >= 1, summary
    assert counts["failed"] == 0, output
    _, alive = psutil.wait_procs(descendants, timeout=30)
    assert not alive, [p.cmdline() for p in alive]
    # the run that finished before Ctrl-C is intact
    name = re.search(r"\[1/\d+\] ok +(\S+)", output).group(1)
    executed = json.loads((REPO_ROOT / "outputs" / "smoke" / "notebooks" / f"{name}.ipynb").read_text())
    meta = executed["metadata"]["papermill"]
    assert meta["end_time"] and not meta["exception"]

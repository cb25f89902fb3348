"""The batch on an existing Dask cluster (--scheduler): a scheduler and two workers started as
subprocesses on 127.0.0.1, each worker in its own directory (no filesystem shared with the
client), and workers killed in the middle of a run."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
import yaml

from squeezestudy.batch.runner import run_batch
from squeezestudy.core.paths import REPO_ROOT
from tests.test_batch import TRAIN_PARAMS, make_notebook

TRAIN_BODY = """import json, pathlib, torch
d = pathlib.Path('outputs/runs') / run_name
d.mkdir(parents=True, exist_ok=True)
(d / 'metrics.json').write_text(json.dumps({'seed': seed}))
(d / 'history.csv').write_text('epoch,acc\\n1,0.5\\n')
torch.save({'w': torch.zeros(3)}, d / 'checkpoint.pt')"""
READER_BODY = """import json, pathlib
found = sorted(p.parent.name for p in pathlib.Path('outputs/runs').glob('*/metrics.json'))
pathlib.Path('outputs/figures').mkdir(parents=True, exist_ok=True)
pathlib.Path('outputs/figures/summary.txt').write_text(' '.join(found))
print(found)"""
# Writes its worker's pid (the kernel's parent) and its own into the test's directory `marks`,
# then waits to be killed; a run named "survivor" finishes at once on its second attempt.
VICTIM_BODY = """import os, pathlib, time
attempt = len(list(pathlib.Path(marks).glob(f'pid-{name}-*'))) + 1
pathlib.Path(marks, f'.pid-{name}-{attempt}').write_text(f'{os.getppid()} {os.getpid()}')
os.rename(pathlib.Path(marks, f'.pid-{name}-{attempt}'), pathlib.Path(marks, f'pid-{name}-{attempt}'))
if not (name == 'survivor' and attempt > 1):
    time.sleep(300)
print('done', attempt)"""


def start(args, env, log):
    return subprocess.Popen([sys.executable, "-m", "dask", *args], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler (retrying nothing itself, one task a worker thread: as the README advises)
    and two nanny workers of
    one thread, each with its own project directory."""
    base = tmp_path_factory.mktemp("cluster")
    scheduler_file = base / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "lib"),
           "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0",
           "DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": "1.0"}
    log = open(base / "cluster.log", "wb")  # noqa: SIM115 (open for the module's lifetime)
    procs = [start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address",
                    "127.0.0.1:0", "--scheduler-file", str(scheduler_file)], env, log)]
    roots = [base / "worker-a", base / "worker-b"]
    try:
        for _ in range(600):
            if scheduler_file.is_file() and scheduler_file.stat().st_size:
                break
            time.sleep(0.1)
        for root in roots:
            root.mkdir()
            procs.append(start(["worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
                                "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0",
                                "--memory-limit", "0"], {**env, "SQUEEZESTUDY_BATCH_ROOT": str(root)}, log))
        from distributed import Client

        with Client(scheduler_file=str(scheduler_file), timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        yield scheduler_file, roots
    finally:
        for proc in reversed(procs):
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def project(tmp_path, runs):
    (tmp_path / "runs.yaml").write_text(yaml.safe_dump({"profiles": {"p": {"runs": runs}}}))
    return tmp_path / "runs.yaml"


def test_results_come_back_to_the_client(cluster, tmp_path):
    scheduler_file, worker_roots = cluster
    make_notebook(tmp_path / "train.ipynb", body=TRAIN_BODY, params=TRAIN_PARAMS)
    make_notebook(tmp_path / "reader.ipynb", body=READER_BODY)
    manifest = project(tmp_path, [
        {"name": "t-{seed}", "notebook": "train.ipynb", "output": "out/{name}.ipynb", "seeds": [0, 1, 2],
         "parameters": {"seed": "{seed}", "run_name": "{name}"}},
        {"name": "reader", "notebook": "reader.ipynb", "output": "out/reader.ipynb", "always": True}])
    lines = []
    outcomes = run_batch("p", manifest_path=manifest, scheduler_file=str(scheduler_file), root=tmp_path,
                         echo=lines.append)
    assert [o.status for o in outcomes] == ["ok"] * 4, [o.error for o in outcomes]
    for seed in range(3):
        run_dir = tmp_path / "outputs" / "runs" / f"t-{seed}"
        assert json.loads((run_dir / "metrics.json").read_text()) == {"seed": seed}
        assert (run_dir / "history.csv").read_text() == "epoch,acc\n1,0.5\n"
        assert (run_dir / "checkpoint.pt").stat().st_size > 0  # small: it travels too
        meta = json.loads((tmp_path / "out" / f"t-{seed}.ipynb").read_text())["metadata"]["papermill"]
        assert meta["input_path"] == "train.ipynb" and meta["end_time"]  # relative: no clone's folder
    # the reader saw all three runs, though they were trained in two other directories
    assert (tmp_path / "outputs" / "figures" / "summary.txt").read_text() == "t-0 t-1 t-2"
    assert not any((root / "out").exists() for root in worker_roots)  # notebooks: the client's only
    assert any(line.startswith("dask: scheduler tcp://127.0.0.1:") for line in lines)
    assert any(line.startswith("start  t-0 on ") for line in lines)


def test_a_killed_worker_retries_the_run_once_then_fails_it(cluster, tmp_path):
    scheduler_file, worker_roots = cluster
    marks = tmp_path / "marks"
    marks.mkdir()
    make_notebook(tmp_path / "victim.ipynb", body=VICTIM_BODY, params="name = 'x'\nmarks = '.'")
    make_notebook(tmp_path / "quick.ipynb", body="print('quick')", params="name = 'x'")
    manifest = project(tmp_path, [
        {"name": "survivor", "notebook": "victim.ipynb", "output": "out/survivor.ipynb",
         "parameters": {"name": "survivor", "marks": str(marks)}},
        {"name": "doomed", "notebook": "victim.ipynb", "output": "out/doomed.ipynb",
         "parameters": {"name": "doomed", "marks": str(marks)}},
        {"name": "quick", "notebook": "quick.ipynb", "output": "out/quick.ipynb"}])
    kernels, finished = [], threading.Event()

    def killer():
        """SIGKILL the worker of each attempt that is to die: survivor's first, doomed's two."""
        killed = set()
        while not finished.is_set():
            for pid_file in marks.glob("pid-*"):
                if pid_file.name in killed or pid_file.name == "pid-survivor-2":
                    continue
                worker, kernel = map(int, pid_file.read_text().split())
                kernels.append(kernel)
                killed.add(pid_file.name)
                os.kill(worker, signal.SIGKILL)
            time.sleep(0.1)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    lines = []
    try:
        outcomes = run_batch("p", manifest_path=manifest, scheduler_file=str(scheduler_file),
                             root=tmp_path, echo=lines.append)
    finally:
        finished.set()
        thread.join()
    result = {o.run.name: o for o in outcomes}
    assert result["survivor"].status == "ok" and "retried" in result["survivor"].note, lines
    assert result["doomed"].status == "failed" and result["doomed"].error == "its worker died 2 times"
    assert result["quick"].status == "ok"
    assert "done 2" in (tmp_path / "out" / "survivor.ipynb").read_text()
    assert sum(line.startswith("retry  ") for line in lines) == 2, "\n".join(lines)
    # the killed workers' kernels do not outlive them (ipykernel watches its parent)
    _, alive = psutil.wait_procs([psutil.Process(k) for k in kernels if psutil.pid_exists(k)], timeout=30)
    assert not alive

"""The batch on a local Dask cluster (--jobs N): the runs' environments, readers after the
training runs above them, failures that do not stop the batch, and the smoke profile."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from squeezestudy.batch import notebook_format
from squeezestudy.batch.manifest import check, load_manifest, select
from squeezestudy.batch.runner import run_batch
from squeezestudy.core.paths import REPO_ROOT
from tests.test_batch import TRAIN_PARAMS, make_notebook

TRAIN_BODY = """import json, os, pathlib, time
time.sleep(2)  # a reader that did not wait for this run would find nothing
d = pathlib.Path('outputs/runs') / run_name
d.mkdir(parents=True, exist_ok=True)
(d / 'metrics.json').write_text(json.dumps({'seed': seed}))"""
ENV_BODY = "import os\nprint(os.environ['STUDY_TEST_VAR'], os.environ['CUDA_VISIBLE_DEVICES'], " \
           "os.environ['OMP_NUM_THREADS'], name)"
READER_BODY = "import json, pathlib\n" \
              "print(json.loads(pathlib.Path('outputs/runs/t-0/metrics.json').read_text()))"


def text_of(notebook: Path) -> str:
    return "".join(json.loads(notebook.read_text())["cells"][-1]["outputs"][0]["text"])


def test_local_cluster_environments_readers_failures_and_skips(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("STUDY_TEST_VAR", raising=False)
    make_notebook(tmp_path / "ok.ipynb")
    make_notebook(tmp_path / "bad.ipynb", body="raise RuntimeError('boom')")
    make_notebook(tmp_path / "env.ipynb", body=ENV_BODY)
    make_notebook(tmp_path / "train.ipynb", body=TRAIN_BODY, params=TRAIN_PARAMS)
    make_notebook(tmp_path / "reader.ipynb", body=READER_BODY)
    runs = [
        {"name": "t-{seed}", "notebook": "train.ipynb", "output": "out/{name}.ipynb", "seeds": [0],
         "parameters": {"seed": "{seed}", "run_name": "{name}"}},
        {"name": "reader", "notebook": "reader.ipynb", "output": "out/reader.ipynb", "always": True},
        {"name": "broken", "notebook": "bad.ipynb", "output": "out/broken.ipynb"},
        {"name": "env-{seed}", "notebook": "env.ipynb", "output": "out/{name}.ipynb", "seeds": [0, 1],
         "parameters": {"name": "b"}},
    ]
    manifest = {"profiles": {"p": {"env": {"STUDY_TEST_VAR": "7"}, "runs": runs}}}
    (tmp_path / "runs.yaml").write_text(yaml.safe_dump(manifest))
    lines = []
    outcomes = run_batch("p", manifest_path=tmp_path / "runs.yaml", jobs=2, gpus=["3", "5"],
                         root=tmp_path, echo=lines.append)
    status = {o.run.name: o.status for o in outcomes}
    assert status == {"t-0": "ok", "reader": "ok", "broken": "failed", "env-0": "ok", "env-1": "ok"}
    assert "boom" in next(o for o in outcomes if o.status == "failed").error
    assert text_of(tmp_path / "out" / "reader.ipynb") == "{'seed': 0}\n"  # it ran after t-0
    threads = str(max(1, len(os.sched_getaffinity(0)) // 2))
    seen = {text_of(tmp_path / "out" / f"env-{i}.ipynb") for i in (0, 1)}
    assert seen <= {f"7 3 {threads} b\n", f"7 5 {threads} b\n"}  # the profile's variable, a GPU each
    assert any(line.startswith("dask: local cluster on 127.0.0.1, 2 worker") for line in lines)
    for executed in (tmp_path / "out").glob("*.ipynb"):  # stored as JupyterLab saves it
        text = executed.read_text(encoding="utf-8")
        assert notebook_format.normal_form(text) == text, executed
    assert "CUDA_VISIBLE_DEVICES" not in os.environ and "OMP_NUM_THREADS" not in os.environ
    executed = json.loads((tmp_path / "out" / "t-0.ipynb").read_text())["metadata"]["papermill"]
    assert executed["input_path"] == "train.ipynb" and executed["end_time"]  # relative to the root

    again = run_batch("p", manifest_path=tmp_path / "runs.yaml", jobs=1, root=tmp_path, echo=lines.append)
    assert {o.run.name: o.status for o in again} == {
        "t-0": "skipped", "reader": "ok", "broken": "failed", "env-0": "skipped", "env-1": "skipped"}


# The smoke profile's training runs and readers that wait for them, as real notebooks on two
# workers. Not the whole profile: nbval executes every notebook in the same CI, and the other
# readers repeated here cost CI minutes (notebook 12's compression cell alone is about a minute).
SMOKE_SUBSET = ["smoke-", "01_paper_notes", "06_comparison", "10_bypass"]


def test_the_smoke_training_runs_and_readers_on_two_local_workers():
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "lib"), "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-m", "squeezestudy.cli", "batch", "--profile", "smoke",
                           "--jobs", "2", "--force", "--only", *SMOKE_SUBSET], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = done.stdout.splitlines()[-1]
    chosen = select(check(load_manifest(REPO_ROOT / "runs.yaml"), REPO_ROOT)["smoke"], SMOKE_SUBSET, "smoke")
    assert len(chosen) >= 5 and {"smoke-0", "smoke-squeezenet-0"} <= {r.name for r in chosen}
    assert summary.startswith(f"{len(chosen)} ok, 0 skipped, 0 failed"), done.stdout
    for name in ("smoke-0", "smoke-squeezenet-0", "06_comparison", "10_bypass"):
        meta = json.loads((REPO_ROOT / "outputs" / "smoke" / "notebooks" / f"{name}.ipynb").read_text())
        assert meta["metadata"]["papermill"]["end_time"] and not meta["metadata"]["papermill"]["exception"]
    assert (REPO_ROOT / "outputs" / "smoke" / "runs" / "smoke-0" / "metrics.json").is_file()

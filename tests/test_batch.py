"""The manifest: expansion, parameters against the notebooks, and every structural mistake
reported at once, before anything runs (the executor itself: tests/test_dask_*.py)."""

import ast
import json
import time

import nbformat
import pytest
import yaml

from squeezestudy.batch.manifest import (
    ManifestError,
    Outcome,
    Run,
    check,
    expand,
    load_manifest,
    notebook_parameters,
)
from squeezestudy.batch.runner import summary_table
from squeezestudy.cli import main
from squeezestudy.core.lock import RunLockedError
from squeezestudy.core.paths import MANIFEST, REPO_ROOT, SMOKE_ENV


def make_notebook(path, body="print(x * 2)", params="x = 1\nname = 'a'\nrate = 0.5"):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


TRAIN_PARAMS = "model = 'net'\nseed = 0\nrun_name = None\noutput_dir = None\ndevice = 'auto'"


@pytest.fixture
def project(tmp_path, monkeypatch):
    from squeezestudy.batch import manifest, runner

    for module in (manifest, runner):  # the manifest's paths are relative to it
        monkeypatch.setattr(module, "REPO_ROOT", tmp_path)
    make_notebook(tmp_path / "ok.ipynb")
    make_notebook(tmp_path / "train.ipynb", body="pass", params=TRAIN_PARAMS)
    manifest = {"profiles": {"p": {"env": {"STUDY_TEST_VAR": "7"}, "runs": [
        {"name": "good-{seed}", "notebook": "ok.ipynb", "output": "out/{name}.ipynb", "seeds": [0, 1],
         "parameters": {"x": "{seed}", "rate": 2}},
        {"name": "t-{seed}", "notebook": "train.ipynb", "output": "out/{name}.ipynb", "seeds": [0],
         "parameters": {"seed": "{seed}", "run_name": "{name}"}},
    ]}}}
    (tmp_path / "runs.yaml").write_text(yaml.safe_dump(manifest))
    return tmp_path


def batch_cli(project, *args):
    return main(["batch", "--profile", "p", "--manifest", str(project / "runs.yaml"), *args])


def test_expand_fills_seeds_and_keeps_int_type(project):
    runs = expand(load_manifest(project / "runs.yaml"), "p", root=project)
    assert [r.name for r in runs] == ["good-0", "good-1", "t-0"]
    assert runs[1].parameters == {"x": 1, "rate": 2}
    with pytest.raises(ManifestError, match="unknown profile 'q'; the manifest has p"):
        expand(load_manifest(project / "runs.yaml"), "q", root=project)


def test_a_training_notebook_has_its_run_directory(project, monkeypatch):
    monkeypatch.delenv("SQUEEZESTUDY_SMOKE", raising=False)
    runs = check(load_manifest(project / "runs.yaml"), root=project)["p"]
    assert runs[0].run_dir is None  # ok.ipynb has no run_name: not a training run
    assert runs[2].run_dir == project / "outputs" / "runs" / "t-0"
    manifest = load_manifest(project / "runs.yaml")
    manifest["profiles"]["p"]["env"]["SQUEEZESTUDY_SMOKE"] = "1"
    manifest["profiles"]["p"]["runs"][1]["parameters"] = {"model": "lenet", "seed": 3}
    run = check(manifest, root=project)["p"][2]
    assert run.run_dir == project / "outputs" / "smoke" / "runs" / "lenet-s3"  # the notebook's default name


def test_the_run_directory_rule_is_the_notebooks():
    from squeezestudy import notebook
    from squeezestudy.batch import manifest as batch
    from squeezestudy.core import paths

    assert paths.RUNS_DIR == paths.REPO_ROOT / batch.RUNS_SUBDIR
    assert notebook.SMOKE_RUNS_DIR == paths.REPO_ROOT / batch.SMOKE_RUNS_SUBDIR
    assert notebook.smoke_mode is paths.smoke_mode and paths.SMOKE_ENV == batch.SMOKE_ENV


def test_unknown_or_mistyped_parameter_runs_nothing(project, capsys):
    manifest = yaml.safe_load((project / "runs.yaml").read_text())
    manifest["profiles"]["p"]["runs"][0]["parameters"] = {"x": "three", "colour": 1}
    (project / "runs.yaml").write_text(yaml.safe_dump(manifest))
    assert batch_cli(project, "--dry-run") == 2
    message = capsys.readouterr().err
    assert "nothing was run" in message and "'x' is str 'three', the notebook expects int" in message
    assert "has no parameter 'colour'" in message and "good-0" in message
    assert not (project / "out").exists()


BAD_MANIFESTS = {
    "yaml syntax": ("profiles:\n  p:\n    runs: [\n", ["line 4", "not valid YAML"]),
    "seeds an int": ({"name": "a-{seed}", "notebook": "ok.ipynb", "output": "a.ipynb", "seeds": 3},
                     ["entry 1 (a-{seed})", "'seeds' must be a list, e.g. [0, 1, 2], not int 3"]),
    "list for a mapping": ({"name": "a", "notebook": "ok.ipynb", "output": "a.ipynb", "parameters": ["x", 1]},
                           ["entry 1 (a)", "'parameters' must be a mapping"]),
    "entry is a list": (["a", "ok.ipynb"], ["entry 1", "must be a mapping with name, notebook and output"]),
    "unknown key": ({"name": "a", "notebook": "ok.ipynb", "output": "a.ipynb", "seed": [0]},
                    ["entry 1 (a)", "unknown key 'seed' (did you mean 'seeds'?)"]),
    "missing notebook": ({"name": "a", "notebook": "nope.ipynb", "output": "a.ipynb"},
                         ["entry 1 (a)", "notebook nope.ipynb not found"]),
}


@pytest.mark.parametrize("case", BAD_MANIFESTS)
def test_a_bad_manifest_is_one_error_naming_the_entry_exit_2(project, case, capsys):
    content, expected = BAD_MANIFESTS[case]
    text = content if isinstance(content, str) else yaml.safe_dump({"profiles": {"p": {"runs": [content]}}})
    (project / "runs.yaml").write_text(text)
    assert batch_cli(project, "--dry-run") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    for fragment in expected:
        assert fragment in err
    assert not (project / "out").exists() and not (project / "a.ipynb").exists()


def test_two_runs_writing_the_same_notebook_or_run_directory(project, capsys):
    runs = [{"name": "a", "notebook": "ok.ipynb", "output": "same.ipynb"},
            {"name": "b", "notebook": "ok.ipynb", "output": "same.ipynb"},
            {"name": "t-{seed}", "notebook": "train.ipynb", "output": "{name}.ipynb", "seeds": [0, 1],
             "parameters": {"run_name": "shared"}},
            # a reader of a run (always: true) may share its directory: it reads it back
            {"name": "reader", "notebook": "train.ipynb", "output": "reader.ipynb", "always": True,
             "parameters": {"run_name": "shared"}}]
    (project / "runs.yaml").write_text(yaml.safe_dump({"profiles": {"p": {"runs": runs}}}))
    assert batch_cli(project, "--dry-run") == 2
    err = capsys.readouterr().err
    assert "runs a, b all write the notebook same.ipynb" in err
    assert "runs t-0, t-1 all train into outputs/runs/shared (give each its own run_name)" in err
    assert "reader" not in err


def test_every_problem_of_every_profile_in_one_error(project, capsys):
    manifest = {"profiles": {
        "p": {"runs": [{"name": "a", "notebook": "ok.ipynb", "output": "a.ipynb", "seeds": 3},
                       {"name": "b", "notebook": "ok.ipynb", "output": "b.ipynb", "parameters": {"x": "1"}}]},
        "other": {"runs": [{"name": "c", "notebook": "gone.ipynb", "output": "c.ipynb"}], "envv": {}},
    }}
    (project / "runs.yaml").write_text(yaml.safe_dump(manifest))
    assert batch_cli(project, "--dry-run") == 2
    err = capsys.readouterr().err
    assert "profile p, entry 1 (a): 'seeds' must be a list" in err
    assert "profile p, run b: parameter 'x' is str '1', the notebook expects int" in err
    assert "profile other, entry 1 (c): notebook gone.ipynb not found" in err
    assert "profile other: unknown key 'envv'" in err


def test_an_unreadable_notebook_is_named(project, capsys):
    (project / "ok.ipynb").write_text("{not json")
    assert batch_cli(project, "--dry-run") == 2
    err = capsys.readouterr().err
    assert "profile p, run good-0: notebook" in err and "ok.ipynb cannot be read" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("args, message", [
    (["--jobs", "0"], "--jobs must be at least 1"),
    (["--gpus", ""], "--gpus needs GPU ids"),
    (["--scheduler", "tcp://127.0.0.1:1", "--jobs", "2"], "--jobs and --gpus start a local cluster"),
    (["--scheduler-file", "/nonexistent/s.json"], "scheduler file /nonexistent/s.json not found"),
])
def test_cluster_options_are_checked_first(project, args, message, capsys):
    assert batch_cli(project, *args) == 2
    assert message in capsys.readouterr().err


def test_an_unreachable_scheduler_is_named(project, capsys, monkeypatch):
    import squeezestudy.batch.cluster as batch_cluster

    monkeypatch.setattr(batch_cluster, "CONNECT_TIMEOUT_S", 2)
    assert batch_cli(project, "--scheduler", "tcp://127.0.0.1:9") == 2  # port 9: nothing listens
    err = capsys.readouterr().err
    assert "cannot reach tcp://127.0.0.1:9" in err and "Traceback" not in err


@pytest.mark.parametrize("content, message", [
    ("", "cannot be read as the JSON that `dask scheduler --scheduler-file` writes"),
    ("{garbage", "cannot be read as the JSON"),
    ('{"type": "Scheduler"}', "holds no scheduler address"),
])
def test_an_unusable_scheduler_file_is_one_line_at_once(project, capsys, tmp_path, content, message):
    """It gave distributed's traceback after 45 s."""
    bad = tmp_path / "scheduler.json"
    bad.write_text(content)
    started = time.monotonic()
    assert batch_cli(project, "--scheduler-file", str(bad)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and time.monotonic() - started < 10


def test_an_address_that_is_not_a_scheduler_fails_within_its_bound(project, capsys, monkeypatch):
    """A port that accepts connections but never speaks Dask's protocol hung the batch past 300 s."""
    import socket
    import threading

    import squeezestudy.batch.cluster as batch_cluster

    monkeypatch.setattr(batch_cluster, "CONNECT_TIMEOUT_S", 2)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    port = listener.getsockname()[1]
    started = time.monotonic()
    try:
        assert batch_cli(project, "--scheduler", f"tcp://127.0.0.1:{port}") == 2
    finally:
        listener.close()
    err = capsys.readouterr().err
    assert f"cannot reach tcp://127.0.0.1:{port}" in err and "Traceback" not in err
    assert time.monotonic() - started < 2 + 10 + 5  # CONNECT_TIMEOUT_S + the handshake's margin


def test_the_real_manifest_checks():
    """Every profile of the study's own manifest: structure, parameters, no two runs writing
    the same notebook or run directory."""
    profiles = check(load_manifest(MANIFEST))
    assert {"full", "smoke"} <= set(profiles)


TRAINING_NOTEBOOK = REPO_ROOT / "notebooks" / "05_training.ipynb"


def train_config_arguments(notebook) -> dict[str, str]:
    """TrainConfig field -> the notebook parameter passed to it, read from the notebook's own
    `TrainConfig(...)` call (notebook 05's second code cell)."""
    for cell in nbformat.read(notebook, as_version=4).cells:
        if cell.cell_type != "code" or "parameters" in cell.metadata.get("tags", []):
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "TrainConfig":
                assert not node.args and all(isinstance(k.value, ast.Name) for k in node.keywords)
                return {k.arg: k.value.id for k in node.keywords}
    raise AssertionError(f"{notebook} builds no TrainConfig(...)")


def test_every_finished_run_has_a_manifest_entry_that_reproduces_it(monkeypatch):
    """Each finished run committed under outputs/runs and outputs/recipes is the run directory of
    some manifest entry whose parameters (notebook 05's defaults filled in) give the config the
    run stored: the manifest can reproduce every committed run."""
    from squeezestudy.training import rundir
    from squeezestudy.training.config import TrainConfig

    monkeypatch.delenv(SMOKE_ENV, raising=False)  # the full runs' directories, not the smoke ones
    declared = notebook_parameters(TRAINING_NOTEBOOK)
    defaults = {name: default for name, (_, default) in declared.items()}
    arguments = train_config_arguments(TRAINING_NOTEBOOK)
    configs: dict = {}  # run directory -> the configs of the entries that train into it
    for runs in check(load_manifest(MANIFEST)).values():
        for run in runs:
            if run.notebook == TRAINING_NOTEBOOK and run.run_dir is not None:
                values = defaults | run.parameters
                config = TrainConfig(**{field: values[name] for field, name in arguments.items()})
                configs.setdefault(run.run_dir, []).append((run.name, config))
    unlisted = []
    finished = [m.parent for d in ("runs", "recipes")
                for m in sorted((REPO_ROOT / "outputs" / d).glob(f"*/{rundir.METRICS}"))]
    assert len(finished) > 16
    for run_dir in finished:
        stored = rundir.read_metrics(run_dir / rundir.METRICS)["config"]
        entries = configs.get(run_dir, [])
        if not any(not config.differences(stored) for _, config in entries):
            why = "; ".join(f"entry {name} differs in {', '.join(config.differences(stored))}"
                            for name, config in entries) or "no entry trains into it"
            unlisted.append(f"{run_dir.relative_to(REPO_ROOT)}: {why}")
    assert not unlisted, "finished runs no manifest entry reproduces:\n  " + "\n  ".join(unlisted)


def test_grid_expands_seed_major_and_keeps_value_types(tmp_path):
    make_notebook(tmp_path / "ok.ipynb")
    entry = {"name": "sweep-r{rate}-s{seed}", "notebook": "ok.ipynb", "output": "out/{name}.ipynb",
             "seeds": [0, 1], "grid": {"rate": [0.25, 0.5]}, "parameters": {"x": "{seed}", "rate": "{rate}"}}
    runs = expand({"profiles": {"p": {"runs": [entry]}}}, "p", root=tmp_path)
    assert [r.name for r in runs] == ["sweep-r0.25-s0", "sweep-r0.5-s0", "sweep-r0.25-s1", "sweep-r0.5-s1"]
    assert runs[3].parameters == {"x": 1, "rate": 0.5}
    with pytest.raises(ManifestError, match="placeholder 'size' is neither seed, name nor a grid key"):
        expand({"profiles": {"p": {"runs": [{**entry, "name": "s{size}"}]}}}, "p", root=tmp_path)
    with pytest.raises(ManifestError, match="'grid' must map each name to a non-empty list"):
        expand({"profiles": {"p": {"runs": [{**entry, "grid": {"rate": []}}]}}}, "p", root=tmp_path)


def test_an_interrupted_notebook_is_not_done(project):
    run = expand(load_manifest(project / "runs.yaml"), "p", root=project)[0]
    run.output.parent.mkdir(parents=True)
    meta = {"parameters": run.parameters, "exception": None, "end_time": None}  # killed mid-run
    run.output.write_text(json.dumps({"metadata": {"papermill": meta}}))
    assert not run.already_done()
    meta["end_time"] = "2026-11-30T00:00:00+00:00"
    run.output.write_text(json.dumps({"metadata": {"papermill": meta}}))
    assert run.already_done()


def test_summary_counts_interrupted_and_cancelled_runs(tmp_path):
    def outcome(name, status, seconds=0.0, note=""):
        run = Run(name, tmp_path / "n.ipynb", tmp_path / f"{name}.ipynb")
        return Outcome(run, status, seconds, note=note)

    table = summary_table([outcome("a", "ok", 60, note="retried: its first worker died"),
                           outcome("b", "interrupted", 30), outcome("c", "cancelled")])
    assert "retried: its first worker died" in table
    assert table.splitlines()[-1] == ("1 ok, 0 skipped, 0 failed, 1 interrupted, 1 cancelled; "
                                      "1.5 min of run time")


def test_a_cluster_left_without_workers_fails_what_is_left_within_its_bound(monkeypatch):
    """SIGTERM to the whole `dask worker` left the batch silent for over 120 s."""
    from squeezestudy.batch import execute
    from squeezestudy.batch.manifest import Run

    class NoWorkers:  # a scheduler that is up, with every worker gone
        status = "running"
        cancelled: list = []

        def scheduler_info(self, n_workers=-1):
            return {"workers": {}}

        def cancel(self, futures, force=False):
            self.cancelled += futures

    said = []
    batch = execute._Batch.__new__(execute._Batch)
    batch.client, batch.echo, batch.outcomes = NoWorkers(), said.append, {}
    runs = [Run(name=n, notebook=REPO_ROOT / "x.ipynb", output=REPO_ROOT / "x.ipynb")
            for n in ("a", "b", "c")]
    batch.futures, batch.waiting = {"future-a": (runs[0], 1), "future-b": (runs[1], 1)}, [runs[2]]
    batch.unwatched_until, batch.alone_since = 0.0, None
    clock = {"now": 1000.0}
    monkeypatch.setattr(execute.time, "monotonic", lambda: clock["now"])
    batch.watch_the_cluster()  # the first look without a worker starts the clock
    clock["now"] += execute.WORKER_LOST_S - 1
    batch.watch_the_cluster()
    assert batch.futures and not batch.outcomes
    clock["now"] += 2
    batch.watch_the_cluster()
    assert not batch.futures and not batch.waiting
    assert {n: (o.status, o.error) for n, o in batch.outcomes.items()} == {
        n: ("failed", f"no worker left on the cluster for {execute.WORKER_LOST_S} s") for n in "abc"}
    assert said and said[0].startswith(f"no worker left on the cluster for {execute.WORKER_LOST_S} s")
    assert NoWorkers.cancelled == ["future-a", "future-b"]


def test_a_relative_data_dir_reaches_the_kernels_absolute(monkeypatch, tmp_path):
    """The kernels run in notebooks/: a relative $FASHION_MNIST_DIR failed every run that loads data."""
    from squeezestudy.batch import runner
    from squeezestudy.data.fashion_mnist import ENV_VAR

    assert runner.DATA_ENV == ENV_VAR
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV_VAR, "shared/fmnist")
    assert runner.data_dir_env() == {ENV_VAR: str(tmp_path / "shared" / "fmnist")}
    monkeypatch.delenv(ENV_VAR)
    assert runner.data_dir_env() == {}


def test_results_brought_back_are_written_under_the_run_directorys_lock(tmp_path):
    """A remote worker's run directory, written here by the client: not while another process
    holds it (a run training into it, another batch writing it)."""
    import subprocess
    import sys

    from squeezestudy.batch import execute
    from squeezestudy.batch.manifest import Run
    from squeezestudy.batch.task import RunResult

    run_dir = tmp_path / "outputs" / "runs" / "t-0"
    run = Run(name="t-0", notebook=tmp_path / "n.ipynb", output=tmp_path / "out" / "t-0.ipynb",
              run_dir=run_dir)
    batch = execute._Batch.__new__(execute._Batch)
    batch.root, batch.shared, batch.written, batch.notes, batch.echo = tmp_path, False, {}, {}, print
    result = RunResult("ok", files={"outputs/runs/t-0/metrics.json": (b"{}", 1)}, host="remote")
    run_dir.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from squeezestudy.core.lock import holding\n"
        f"with holding({str(run_dir)!r}):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, env={**__import__("os").environ,
                                                 "PYTHONPATH": str(REPO_ROOT / "lib")})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=rf"being trained by process {holder.pid}"):
            batch.store(run, result)
        assert not (run_dir / "metrics.json").exists()
    finally:
        holder.kill()
        holder.wait()
    batch.store(run, result)  # the holder is gone: its stale lock is taken over, the files written
    assert (run_dir / "metrics.json").read_bytes() == b"{}" and not (run_dir / ".lock").exists()

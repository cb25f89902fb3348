import json

import nbformat
import pytest
import yaml
from squeezestudy.batch import ManifestError, expand, load_manifest, run_batch, summary_table
from squeezestudy.cli import main


def make_notebook(path, body="print(x * 2)"):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x = 1\nname = 'a'\nrate = 0.5")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def project(tmp_path):
    make_notebook(tmp_path / "ok.ipynb")
    make_notebook(tmp_path / "bad.ipynb", body="raise RuntimeError('boom')")
    make_notebook(tmp_path / "env.ipynb", body="import os\nprint(os.environ['STUDY_TEST_VAR'], name)")
    manifest = {"profiles": {"p": {"env": {"STUDY_TEST_VAR": "7"}, "runs": [
        {"name": "good-{seed}", "notebook": "ok.ipynb", "output": "out/{name}.ipynb", "seeds": [0, 1],
         "parameters": {"x": "{seed}", "rate": 2}},
        {"name": "broken", "notebook": "bad.ipynb", "output": "out/broken.ipynb"},
        {"name": "env", "notebook": "env.ipynb", "output": "out/env.ipynb",
         "parameters": {"name": "b"}},
    ]}}}
    (tmp_path / "runs.yaml").write_text(yaml.safe_dump(manifest))
    return tmp_path


def test_expand_fills_seeds_and_keeps_int_type(project):
    runs = expand(load_manifest(project / "runs.yaml"), "p", root=project)
    assert [r.name for r in runs] == ["good-0", "good-1", "broken", "env"]
    assert runs[1].parameters == {"x": 1, "rate": 2}
    with pytest.raises(ManifestError, match="unknown profile 'q'; the manifest has p"):
        expand(load_manifest(project / "runs.yaml"), "q", root=project)


def test_unknown_or_mistyped_parameter_runs_nothing(project, monkeypatch):
    import squeezestudy.batch as batch

    monkeypatch.setattr(batch, "REPO_ROOT", project)
    manifest = yaml.safe_load((project / "runs.yaml").read_text())
    manifest["profiles"]["p"]["runs"][0]["parameters"] = {"x": "three", "colour": 1}
    (project / "runs.yaml").write_text(yaml.safe_dump(manifest))
    orig_expand = batch.expand
    monkeypatch.setattr(batch, "expand", lambda m, p: orig_expand(m, p, root=project))
    with pytest.raises(ManifestError) as err:
        run_batch("p", manifest_path=project / "runs.yaml", echo=lambda *a: None)
    message = str(err.value)
    assert "nothing was run" in message and "'x' is str 'three', the notebook expects int" in message
    assert "has no parameter 'colour'" in message
    assert not (project / "out").exists()


def test_failure_does_not_stop_the_batch_and_reruns_are_skipped(project, monkeypatch):
    import squeezestudy.batch as batch

    monkeypatch.delenv("STUDY_TEST_VAR", raising=False)

    monkeypatch.setattr(batch, "REPO_ROOT", project)
    orig_expand = batch.expand
    monkeypatch.setattr(batch, "expand", lambda m, p: orig_expand(m, p, root=project))
    lines = []
    outcomes = run_batch("p", manifest_path=project / "runs.yaml", echo=lines.append)
    status = {o.run.name: o.status for o in outcomes}
    assert status == {"good-0": "ok", "good-1": "ok", "broken": "failed", "env": "ok"}
    failed = next(o for o in outcomes if o.status == "failed")
    assert "boom" in failed.error
    executed = json.loads((project / "out" / "good-1.ipynb").read_text())
    assert "".join(executed["cells"][-1]["outputs"][0]["text"]) == "2\n"
    env_nb = json.loads((project / "out" / "env.ipynb").read_text())
    assert "".join(env_nb["cells"][-1]["outputs"][0]["text"]) == "7 b\n"  # profile env reached it
    assert "failed" in summary_table(outcomes)

    again = run_batch("p", manifest_path=project / "runs.yaml", echo=lines.append)
    assert {o.run.name: o.status for o in again} == {
        "good-0": "skipped", "good-1": "skipped", "broken": "failed", "env": "skipped"}


def test_cli_exit_codes(project, monkeypatch, capsys):
    import squeezestudy.batch as batch

    monkeypatch.setattr(batch, "REPO_ROOT", project)
    orig_expand = batch.expand
    monkeypatch.setattr(batch, "expand", lambda m, p: orig_expand(m, p, root=project))
    assert main(["batch", "--profile", "p", "--manifest", str(project / "runs.yaml"),
                 "--only", "good", "--jobs", "2"]) == 0
    assert main(["batch", "--profile", "p", "--manifest", str(project / "runs.yaml")]) == 1
    assert main(["batch", "--profile", "nope", "--manifest", str(project / "runs.yaml")]) == 2
    assert "unknown profile" in capsys.readouterr().err


def test_the_real_manifest_validates():
    """Every run of the study's own manifest matches its notebook's parameters cell."""
    from squeezestudy.batch import MANIFEST, validate

    manifest = load_manifest(MANIFEST)
    for profile in manifest["profiles"]:
        validate(expand(manifest, profile))


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


def test_parallel_runs_get_their_own_gpu_and_leave_this_environment_alone(tmp_path, monkeypatch):
    import os

    import squeezestudy.batch as batch

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    make_notebook(tmp_path / "gpu.ipynb", body="import os, time\ntime.sleep(1)\n"
                  "print(os.environ['CUDA_VISIBLE_DEVICES'], os.environ['OMP_NUM_THREADS'])")
    runs = [{"name": "g-{seed}", "notebook": "gpu.ipynb", "output": "out/{name}.ipynb", "seeds": [0, 1]}]
    (tmp_path / "runs.yaml").write_text(yaml.safe_dump({"profiles": {"p": {"runs": runs}}}))
    monkeypatch.setattr(batch, "REPO_ROOT", tmp_path)
    orig_expand = batch.expand
    monkeypatch.setattr(batch, "expand", lambda m, p: orig_expand(m, p, root=tmp_path))
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    lines = []
    outcomes = run_batch("p", manifest_path=tmp_path / "runs.yaml", jobs=2, gpus=["3", "5"],
                         echo=lines.append)
    assert [o.status for o in outcomes] == ["ok", "ok"]
    cells = [json.loads((tmp_path / "out" / f"g-{i}.ipynb").read_text())["cells"] for i in (0, 1)]
    seen = {"".join(c[-1]["outputs"][0]["text"]) for c in cells}
    assert seen == {"3 2\n", "5 2\n"}  # one GPU each, the 4 cores shared out
    assert any("on GPU" in line for line in lines)
    assert "CUDA_VISIBLE_DEVICES" not in os.environ and "OMP_NUM_THREADS" not in os.environ
    with pytest.raises(ManifestError, match="--gpus needs GPU ids"):
        run_batch("p", manifest_path=tmp_path / "runs.yaml", gpus=[""], echo=lines.append)


def test_an_interrupted_notebook_is_not_done(project):
    run = expand(load_manifest(project / "runs.yaml"), "p", root=project)[0]
    run.output.parent.mkdir(parents=True)
    meta = {"parameters": run.parameters, "exception": None, "end_time": None}  # killed mid-run
    run.output.write_text(json.dumps({"metadata": {"papermill": meta}}))
    assert not run.already_done()
    meta["end_time"] = "2026-11-30T00:00:00+00:00"
    run.output.write_text(json.dumps({"metadata": {"papermill": meta}}))
    assert run.already_done()

"""Committed results do not depend on who re-executes them: machine-dependent numbers are read back
from where they were measured, notebooks keep their bytes when only timestamps changed, and no
committed file names a folder, host or user of the machine that wrote it."""

import json
import re
import subprocess

import pytest
import torch
from torch import nn

from squeezestudy.batch import notebook_format
from squeezestudy.compression import measured
from squeezestudy.core.paths import REPO_ROOT
from squeezestudy.data import fashion_mnist as data


def test_a_recorded_result_is_read_back_not_recomputed(tmp_path, monkeypatch):
    monkeypatch.delenv("SQUEEZESTUDY_SMOKE", raising=False)
    records = tmp_path / "int8.json"
    calls = []

    def compute(value):
        return lambda: calls.append(value) or {"test_acc": value}

    fingerprint = {"fp32_state_sha256": "a"}
    assert measured.recorded("int8/x", fingerprint, compute(0.9074), records) == {"test_acc": 0.9074}
    entry = json.loads(records.read_text())["int8/x"]
    assert entry["fingerprint"] == fingerprint and entry["machine"]
    # another machine would compute 0.9079: the record is what counts while the inputs match
    assert measured.recorded("int8/x", fingerprint, compute(0.9079), records) == {"test_acc": 0.9074}
    assert calls == [0.9074]
    # new weights: measured again, and the record replaced
    assert measured.recorded("int8/x", {"fp32_state_sha256": "b"}, compute(0.91), records)["test_acc"] == 0.91
    # asked to re-measure on this machine
    monkeypatch.setenv(measured.REMEASURE_ENV, "1")
    assert measured.recorded("int8/x", {"fp32_state_sha256": "b"}, compute(0.92), records)["test_acc"] == 0.92


def test_smoke_runs_never_write_the_records(tmp_path, monkeypatch):
    monkeypatch.setenv("SQUEEZESTUDY_SMOKE", "1")
    records = tmp_path / "int8.json"
    assert measured.recorded("int8/x", {}, lambda: {"test_acc": 1.0}, records) == {"test_acc": 1.0}
    assert not records.exists()


def test_a_damaged_record_file_is_a_clear_error(tmp_path):
    records = tmp_path / "int8.json"
    records.write_text("{oops")
    with pytest.raises(ValueError, match="git checkout"):
        measured.recorded("int8/x", {}, lambda: {}, records)


def test_fingerprints_follow_weights_and_images():
    model = nn.Linear(3, 2)
    before = measured.state_sha256(model)
    assert measured.state_sha256(model.to(memory_format=torch.contiguous_format)) == before
    with torch.no_grad():
        model.weight[0, 0] += 1
    assert measured.state_sha256(model) != before
    split = data.Split(torch.zeros(4, 28, 28, dtype=torch.uint8), torch.arange(4))
    loader = data.Batches(split, 2, mean=0.5, std=0.5)
    same, other = data.Batches(split, 2, mean=0.5, std=0.5), data.Batches(split, 4, mean=0.5, std=0.5)
    assert measured.batches_sha256(loader) == measured.batches_sha256(same)
    assert measured.batches_sha256(loader) != measured.batches_sha256(other)
    with pytest.raises(ValueError, match="fixed-order"):
        measured.batches_sha256(data.Batches(split, 2, mean=0.5, std=0.5, shuffle=True))


def test_every_committed_int8_result_has_its_record():
    """Tables 2 (notebooks 11 and 12) and notebook 07 read their int8 rows from the records."""
    records = measured.read_records()
    assert {"int8/squeezenet_fmnist-s0", "int8/lenet-s0", "int8/table2/one-Fire SqueezeNet",
            "int8/table2/headline SqueezeNet"} <= set(records)
    for entry in records.values():
        assert entry["machine"] and set(entry["result"]) == {"file_bytes", "test_acc"}


def test_papermill_paths_are_stored_relative_to_the_repository():
    text = json.dumps({"cells": [], "metadata": {"papermill": {
        "input_path": str(REPO_ROOT / "notebooks" / "05_training.ipynb"),
        "output_path": str(REPO_ROOT / "outputs" / "notebooks" / "x.ipynb")}},
        "nbformat": 4, "nbformat_minor": 5})
    meta = json.loads(notebook_format.normal_form(text))["metadata"]["papermill"]
    assert meta == {"input_path": "notebooks/05_training.ipynb", "output_path": "outputs/notebooks/x.ipynb"}
    assert notebook_format.relative_path("/elsewhere/x.ipynb") == "/elsewhere/x.ipynb"


def test_a_re_execution_that_changed_only_timestamps_keeps_the_committed_bytes(tmp_path):
    def notebook(start, output):
        return notebook_format.normal_form(json.dumps({
            "cells": [{"cell_type": "code", "execution_count": 1, "id": "a", "source": "1",
                       "metadata": {"papermill": {"start_time": start, "duration": 0.1,
                                                  "status": "completed"}},
                       "outputs": [{"output_type": "stream", "name": "stdout", "text": output}]}],
            "metadata": {"papermill": {"start_time": start, "end_time": start, "duration": 1.0}},
            "nbformat": 4, "nbformat_minor": 5}))

    committed = tmp_path / "nb.ipynb"
    committed.write_text(notebook("2026-11-30T16:45:39", "0.9074\n"))
    assert notebook_format.same_but_timings(committed, notebook("2026-12-06T09:00:00", "0.9074\n"))
    assert not notebook_format.same_but_timings(committed, notebook("2026-12-06T09:00:00", "0.9079\n"))
    assert not notebook_format.same_but_timings(tmp_path / "absent.ipynb", notebook("x", "y"))


# A folder of a machine: /root/..., /home/<user>/..., /work/..., /tmp/..., /Users/<user>/...
MACHINE_PATH = re.compile(r"(?<![\w.~$-])/(root|home|work|tmp|Users|private|var/folders)/")


def test_no_committed_file_names_a_folder_of_the_machine_that_wrote_it():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    found = []
    for name in filter(None, files):
        path = REPO_ROOT / name
        if not path.is_file() or path.suffix in (".pt", ".sqdc", ".npz", ".png", ".gz"):
            continue
        text = path.read_text(errors="replace")
        if name.endswith(".ipynb"):  # images are base64: look at everything but them
            nb = json.loads(text)
            text = json.dumps({k: v for k, v in nb.items() if k != "cells"}) + "".join(
                json.dumps(c.get("source")) + json.dumps(
                    [o for o in c.get("outputs", []) if "image/png" not in o.get("data", {})])
                for c in nb["cells"])
        for line in text.splitlines():
            if MACHINE_PATH.search(line) and "test_reproducible.py" not in name:
                found.append(f"{name}: {line.strip()[:120]}")
    assert not found, "\n".join(found)


def test_a_notebook_without_its_data_says_how_to_point_at_it(tmp_path, monkeypatch, capsys):
    from squeezestudy import notebook

    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))  # a folder without the files
    with pytest.raises(notebook.DataNeeded, match=r"%env FASHION_MNIST_DIR=/path/to/dir"):
        notebook.check_data()
    with pytest.raises(notebook.DataNeeded, match="the directory you passed"):
        notebook.check_data(str(tmp_path))
    monkeypatch.delenv(data.ENV_VAR)
    shared = REPO_ROOT.parent / "shared" / "datasets" / "fashion-mnist"
    if shared.is_dir():  # found: the notebook shows nothing
        notebook.check_data(str(shared))
        assert capsys.readouterr().out == ""

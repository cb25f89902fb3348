"""Fault injection: interrupted and killed training, damaged result files, run directories that
must be finished or in progress (never a mix), output directories, bad input on the command line.
Each case is one test; docs/faults.md lists them with what the user sees."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from squeezestudy.cli import main
from squeezestudy.core import fileio, paths
from squeezestudy.data import fashion_mnist as data
from squeezestudy.data.idx import IdxError
from squeezestudy.runs import study
from squeezestudy.runs.finished import load_predictions, load_run, load_trained_model
from squeezestudy.runs.study import fit_or_load
from squeezestudy.training import loop as fit_module
from squeezestudy.training import rundir
from squeezestudy.training.config import TrainConfig
from squeezestudy.training.loop import ConfigMismatchError, fit
from squeezestudy.training.rundir import RunExistsError
from squeezestudy.training.stage import TrainingInterrupted

from .conftest import default_sigint, write_idx

LIB = Path(__file__).resolve().parents[1] / "lib"
FAST = {"model": "lenet", "batch_size": 100, "device": "cpu", "precision": "fp32", "epochs": 2}


@pytest.fixture(scope="module")
def tiny(fashion_mnist):
    """500 training, 200 validation and 200 test images of the real data: 5 steps an epoch."""
    return data.FashionMNIST(fashion_mnist.train.subset(500), fashion_mnist.val.subset(200),
                             fashion_mnist.test.subset(200), fashion_mnist.source)


@pytest.fixture(scope="module")
def finished_run(tiny, tmp_path_factory):
    """A finished 2-epoch LeNet run directory (copied by each test that damages it)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    fit(TrainConfig(**FAST), tiny, out_dir=run_dir, quiet=True)
    return run_dir


@pytest.fixture
def run_copy(finished_run, tmp_path):
    shutil.copytree(finished_run, tmp_path / "run")
    return tmp_path / "run"


def interrupt_nth_call(monkeypatch, module, name, n):
    """Make the n-th call of module.name raise KeyboardInterrupt, as Ctrl-C would there."""
    real, calls = getattr(module, name), []

    def interrupting(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, interrupting)


def no_data_loading(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the data was loaded before the fault was detected")

    monkeypatch.setattr(data, "load", fail)


def cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# --- a real training process, interrupted and killed --------------------------------------------

KILL_EPOCHS = 3


def train_command(run_dir: Path, source: Path, *extra: str, epochs: int = KILL_EPOCHS) -> list[str]:
    return [sys.executable, "-m", "squeezestudy.cli", "train", "--model", "lenet", "--augment",
            "--epochs", str(epochs), "--batch-size", "100", "--train-subset", "500",
            "--device", "cpu", "--precision", "fp32", "--data-dir", str(source), "--out", str(run_dir),
            "--quiet", *extra]


def child_env() -> dict:
    # One thread: cheaper on a shared machine, and the reference run below uses one too (the
    # same reduction order, so the same bits).
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(LIB), os.environ.get("PYTHONPATH", "")])}


def start_and_wait_for_checkpoint(cmd: list[str], run_dir: Path) -> subprocess.Popen:
    """Start training and return once its first checkpoint exists: it is then in epoch 2."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(),
                            text=True, preexec_fn=default_sigint)
    deadline = time.monotonic() + 300  # a guard against hanging, not a timing assertion
    while not (run_dir / rundir.CHECKPOINT).exists():
        if proc.poll() is not None:
            pytest.fail(f"training ended before its first checkpoint: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no checkpoint within 300 s")
        time.sleep(0.01)
    return proc


def test_sigkill_mid_epoch_then_resume_gives_the_same_weights(fashion_mnist, tmp_path):
    run_dir = tmp_path / "run"
    proc = start_and_wait_for_checkpoint(train_command(run_dir, fashion_mnist.source), run_dir)
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"not killed in time: exit {proc.returncode} {stderr}"
    assert not (run_dir / rundir.METRICS).exists()  # killed before finishing: in progress
    killed_at = torch.load(run_dir / rundir.CHECKPOINT, weights_only=True)["epoch"]
    assert 1 <= killed_at < KILL_EPOCHS

    resumed = subprocess.run(train_command(run_dir, fashion_mnist.source, "--resume"),
                             capture_output=True, text=True, env=child_env(), timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    # The uninterrupted run, in this process: the same training images (and statistics), only
    # fewer evaluation images, which do not change the weights.
    same_training = data.FashionMNIST(fashion_mnist.train, fashion_mnist.val.subset(100),
                                      fashion_mnist.test.subset(100), fashion_mnist.source)
    config = TrainConfig(model="lenet", augment=True, epochs=KILL_EPOCHS, batch_size=100,
                         train_subset=500, device="cpu", precision="fp32")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        straight = fit(config, same_training, quiet=True)
    finally:
        torch.set_num_threads(threads)
    final = torch.load(run_dir / rundir.CHECKPOINT, weights_only=True)
    assert final["epoch"] == KILL_EPOCHS
    for name, weights in straight.model.state_dict().items():
        assert torch.equal(weights, final["model"][name]), name
    metrics, history = load_run(run_dir)
    assert history["train_loss"].tolist() == straight.history["train_loss"].tolist()
    assert not list(run_dir.glob(".*.tmp"))


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_sigint_or_sigterm_exits_and_says_how_to_resume(fashion_mnist, tmp_path, signum, code):
    """SIGTERM (kill, a job scheduler) is handled as Ctrl-C is, with its own exit code."""
    run_dir = tmp_path / "run"
    # many epochs: however slow this process is to react, the signal lands before the end
    proc = start_and_wait_for_checkpoint(train_command(run_dir, fashion_mnist.source, epochs=50), run_dir)
    proc.send_signal(signum)
    try:
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:  # never leave a training process behind a failed test
            proc.kill()
    assert proc.returncode == code, f"exit {proc.returncode}: {stderr}"
    assert "Traceback" not in stderr
    assert f"saved in {run_dir}" in stderr
    assert not (run_dir / ".lock").exists()  # the run directory's lock is released
    assert ("continue with resume=True (command line: --resume; notebook 05 or the batch: run it "
            "again)") in stderr
    assert not (run_dir / rundir.METRICS).exists()


# --- Ctrl-C / kernel interrupt anywhere in an epoch (issue 12) ----------------------------------

def test_interrupt_in_evaluation_says_what_is_saved(tiny, tmp_path, monkeypatch):
    interrupt_nth_call(monkeypatch, fit_module, "evaluate", 3)  # epoch 2's validation
    with pytest.raises(TrainingInterrupted) as err:
        fit(TrainConfig(**FAST), tiny, out_dir=tmp_path, quiet=True)
    message = str(err.value)
    assert message.startswith("interrupted in epoch 2 of 2 (evaluation)")
    assert f"epoch 1 is saved in {tmp_path}" in message and "resume=True" in message
    assert torch.load(tmp_path / rundir.CHECKPOINT, weights_only=True)["epoch"] == 1
    assert err.value._render_traceback_() == [f"TrainingInterrupted: {message}"]  # IPython's view


def test_interrupt_while_saving_a_checkpoint_keeps_the_previous_one(tiny, tmp_path,
                                                                    monkeypatch):
    interrupt_nth_call(monkeypatch, fileio, "torch_save", 2)  # epoch 2's checkpoint
    with pytest.raises(TrainingInterrupted, match=r"epoch 2 of 2 \(saving its checkpoint\); "
                                                  r"epoch 1 is saved"):
        fit(TrainConfig(**FAST), tiny, out_dir=tmp_path, quiet=True)
    assert torch.load(tmp_path / rundir.CHECKPOINT, weights_only=True)["epoch"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_interrupt_just_after_the_checkpoint_rename_counts_it_as_saved(tiny, tmp_path, monkeypatch):
    interrupt_nth_call(monkeypatch, fileio, "_fsync_dir", 3)  # epoch 1: checkpoint, history; epoch 2
    with pytest.raises(TrainingInterrupted, match=r"epoch 2 of 2 \(saving its checkpoint\); "
                                                  r"epochs 1-2 are saved"):
        fit(TrainConfig(**FAST), tiny, out_dir=tmp_path, quiet=True)
    assert torch.load(tmp_path / rundir.CHECKPOINT, weights_only=True)["epoch"] == 2


def test_interrupt_in_the_first_epoch_says_nothing_is_saved(tiny, tmp_path, monkeypatch):
    interrupt_nth_call(monkeypatch, fit_module, "train_step", 3)
    with pytest.raises(TrainingInterrupted, match=r"in epoch 1 of 2 \(training\); no epoch was saved"):
        fit(TrainConfig(**FAST), tiny, out_dir=tmp_path, quiet=True)
    interrupt_nth_call(monkeypatch, fit_module, "train_step", 3)
    with pytest.raises(TrainingInterrupted, match="nothing is kept on disk"):
        fit(TrainConfig(**FAST), tiny, quiet=True)


def test_interrupt_while_writing_results_leaves_an_unfinished_run_that_resumes(
        tiny, tmp_path, monkeypatch):
    interrupt_nth_call(monkeypatch, fit_module, "predictions_npz", 1)
    with pytest.raises(TrainingInterrupted, match=r"while writing the results .*epochs 1-2 are saved"
                                                  r".*\(the run is not finished\)"):
        fit(TrainConfig(**FAST), tiny, out_dir=tmp_path, quiet=True)
    assert not (tmp_path / rundir.METRICS).exists()
    monkeypatch.undo()
    monkeypatch.setattr(fit_module, "train_step", lambda *a, **k: pytest.fail("an epoch was trained again"))
    metrics, history = fit_or_load(TrainConfig(**FAST), tmp_path, quiet=True, dataset=tiny)
    assert len(history) == 2
    assert load_run(tmp_path)[0] == metrics


def test_cli_interrupt_exits_130_with_the_resume_hint(fashion_mnist, tmp_path, monkeypatch, capsys):
    interrupt_nth_call(monkeypatch, fit_module, "evaluate", 3)
    code, output = cli(capsys, "train", "--model", "lenet", "--epochs", "2", "--batch-size", "100",
                       "--train-subset", "200", "--device", "cpu", "--data-dir", str(fashion_mnist.source),
                       "--out", str(tmp_path / "run"), "--quiet")
    assert code == 130 and "Traceback" not in output
    assert "interrupted in epoch 2 of 2 (evaluation); epoch 1 is saved" in output
    assert "--resume" in output


# --- run directories: finished or in progress, never a mix --------------------------------------

def test_retraining_a_finished_run_needs_force_and_touches_nothing(tiny, run_copy):
    before = {p.name: p.read_bytes() for p in run_copy.iterdir()}
    with pytest.raises(RunExistsError, match=r"already holds a finished run; pass force=True \(command "
                                             r"line: --force\)"):
        fit(TrainConfig(**FAST), tiny, out_dir=run_copy, quiet=True)
    with pytest.raises(RunExistsError, match="no checkpoint to resume from"):
        (run_copy / rundir.CHECKPOINT).rename(run_copy.parent / "aside.pt")
        fit(TrainConfig(**FAST), tiny, out_dir=run_copy, quiet=True, resume=True)
    (run_copy.parent / "aside.pt").rename(run_copy / rundir.CHECKPOINT)
    assert {p.name: p.read_bytes() for p in run_copy.iterdir()} == before


def test_forced_retrain_interrupted_leaves_no_old_file(tiny, run_copy, monkeypatch):
    (run_copy / "curves.png").write_bytes(b"old figure")
    interrupt_nth_call(monkeypatch, fit_module, "evaluate", 3)  # epoch 2 of the new run
    with pytest.raises(TrainingInterrupted):
        fit(TrainConfig(**{**FAST, "lr": 1e-3}), tiny, out_dir=run_copy, quiet=True,
            force=True)
    assert sorted(p.name for p in run_copy.iterdir()) == [rundir.CHECKPOINT, rundir.HISTORY]
    assert len(pd.read_csv(run_copy / rundir.HISTORY)) == 1
    assert torch.load(run_copy / rundir.CHECKPOINT, weights_only=True)["config"]["lr"] == 1e-3
    with pytest.raises(FileNotFoundError, match="not finished"):
        load_run(run_copy)


def test_forced_retrain_that_fails_to_start_changes_nothing(run_copy, monkeypatch):
    before = {p.name: p.read_bytes() for p in run_copy.iterdir()}

    def interrupted_load(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "load", interrupted_load)
    with pytest.raises(TrainingInterrupted, match=rf"before epoch 1 of 2 \(loading data\); nothing in "
                                                  rf"{run_copy} was changed"):
        fit(TrainConfig(**FAST), out_dir=run_copy, quiet=True, force=True)
    monkeypatch.undo()
    with pytest.raises(data.DataNotFoundError):
        fit(TrainConfig(**FAST), out_dir=run_copy, quiet=True, force=True,
            data_dir=run_copy / "no-data-here")
    assert {p.name: p.read_bytes() for p in run_copy.iterdir()} == before


def test_fit_or_load_resumes_a_stale_mix_instead_of_reading_it(tiny, run_copy, monkeypatch):
    """What the old code left: a finished run's metrics.json beside a new, partial history."""
    state = torch.load(run_copy / rundir.CHECKPOINT, weights_only=True)
    state.pop("digest")  # as the old code wrote it: without one
    partial = {**state, "epoch": 1, "history": state["history"][:1]}
    fileio.torch_save(partial, run_copy / rundir.CHECKPOINT)
    (run_copy / rundir.HISTORY).write_text(pd.DataFrame(partial["history"]).to_csv(index=False))
    resumed = []
    real_fit = fit
    monkeypatch.setattr(study, "fit", lambda *a, **k: resumed.append(k["resume"]) or real_fit(*a, **k))
    metrics, history = fit_or_load(TrainConfig(**FAST), run_copy, quiet=True, dataset=tiny)
    assert resumed == [True] and len(history) == 2
    assert load_run(run_copy)[0] == metrics  # consistent again


def test_fit_or_load_refuses_to_replace_a_finished_run_of_another_config(tiny, run_copy):
    other = TrainConfig(**{**FAST, "lr": 1e-3})
    with pytest.raises(RunExistsError, match=r"finished run of another config \(differs in: lr\)"):
        fit_or_load(other, run_copy, quiet=True, dataset=tiny)
    metrics, _ = fit_or_load(other, run_copy, quiet=True, dataset=tiny, force=True)
    assert metrics["config"]["lr"] == 1e-3 and load_run(run_copy)[0] == metrics


def test_interrupted_run_is_not_overwritten_without_resume_or_force(tiny, run_copy):
    (run_copy / rundir.METRICS).unlink()
    with pytest.raises(RunExistsError, match=r"interrupted run \(checkpoint.pt\); continue it with "
                                             r"resume=True .*force=True"):
        fit(TrainConfig(**FAST), tiny, out_dir=run_copy, quiet=True)
    assert (run_copy / rundir.CHECKPOINT).is_file()
    with pytest.raises(ConfigMismatchError, match="differs in: lr.*force=True"):
        fit(TrainConfig(**{**FAST, "lr": 1e-3}), tiny, out_dir=run_copy, quiet=True,
            resume=True)


def test_stale_temporary_files_of_a_killed_write_are_removed(tiny, run_copy):
    stale = run_copy / ".checkpoint.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    fit(TrainConfig(**FAST), tiny, out_dir=run_copy, quiet=True, resume=True)
    assert not stale.exists()


# --- damaged result files: each read back with an error naming it -------------------------------

def damage(path: Path, how: str) -> None:
    raw = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    else:  # garbage
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())


FAULTS = ("empty", "truncated", "garbage")


@pytest.mark.parametrize("how", FAULTS)
def test_damaged_checkpoint_with_resume(tiny, run_copy, how):
    damage(run_copy / rundir.CHECKPOINT, how)
    with pytest.raises(rundir.ResultFileError) as err:
        fit(TrainConfig(**FAST), tiny, out_dir=run_copy, quiet=True, resume=True)
    assert str(run_copy / rundir.CHECKPOINT) in str(err.value)
    assert "delete it to start the run over" in str(err.value)
    with pytest.raises(rundir.ResultFileError, match="checkpoint.pt"):
        load_trained_model(run_copy)


@pytest.mark.parametrize("how", FAULTS)
def test_damaged_checkpoint_on_the_command_line(run_copy, how, capsys, monkeypatch):
    damage(run_copy / rundir.CHECKPOINT, how)
    no_data_loading(monkeypatch)  # the checkpoint is checked first
    code, output = cli(capsys, "train", "--model", "lenet", "--epochs", "2", "--batch-size", "100",
                       "--device", "cpu", "--precision", "fp32", "--out", str(run_copy), "--resume")
    assert code == 2 and "Traceback" not in output
    assert f"error: {run_copy / rundir.CHECKPOINT}: " in output and "--force" in output


def test_checkpoint_whose_weights_do_not_fit(tiny, run_copy):
    state = torch.load(run_copy / rundir.CHECKPOINT, weights_only=True)
    state["model"] = {k: v[:1] for k, v in state["model"].items()}
    state["digest"] = rundir.state_digest(state)  # a consistent file, of another shape
    fileio.torch_save(state, run_copy / rundir.CHECKPOINT)
    with pytest.raises(rundir.ResultFileError, match="weights do not fit"):
        fit(TrainConfig(**FAST), tiny, out_dir=run_copy, quiet=True, resume=True)


@pytest.mark.parametrize("how", (*FAULTS, "not an object", "keys missing"))
def test_damaged_metrics(tiny, run_copy, how):
    path = run_copy / rundir.METRICS
    if how == "not an object":
        path.write_text("[1, 2]")
    elif how == "keys missing":
        path.write_text(json.dumps({"model": "lenet"}))
    else:
        damage(path, how)
    from squeezestudy.analysis.results import collect_runs

    for read in (load_run, lambda d: collect_runs(d.parent),
                 lambda d: fit_or_load(TrainConfig(**FAST), d, quiet=True, dataset=tiny)):
        with pytest.raises(rundir.ResultFileError) as err:
            read(run_copy)
        assert str(path) in str(err.value)


@pytest.mark.parametrize("how", (*FAULTS, "row cut"))
def test_damaged_history(run_copy, how):
    path = run_copy / rundir.HISTORY
    if how == "row cut":
        path.write_bytes(path.read_bytes()[:-40])
    else:
        damage(path, how)
    with pytest.raises(rundir.ResultFileError, match="history.csv"):
        load_run(run_copy)
    with pytest.raises(rundir.ResultFileError) as err:
        rundir.read_history(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("how", FAULTS)
def test_damaged_predictions(run_copy, how):
    path = run_copy / rundir.PREDICTIONS
    damage(path, how)
    with pytest.raises(rundir.ResultFileError) as err:
        load_predictions(run_copy)
    assert str(path) in str(err.value)
    with pytest.raises(rundir.ResultFileError, match="predictions.npz"):
        load_run(run_copy)


def test_missing_predictions_is_a_file_not_found(run_copy):
    (run_copy / rundir.PREDICTIONS).unlink()
    with pytest.raises(FileNotFoundError, match="predictions.npz: missing"):
        load_predictions(run_copy)


@pytest.mark.parametrize("how", FAULTS)
def test_damaged_weights_file(tmp_path, how):
    from squeezestudy.runs import weights

    run = weights.available()[0]
    shutil.copy(weights.path(run), tmp_path / f"{run}.pt")
    damage(tmp_path / f"{run}.pt", how)
    with pytest.raises(rundir.ResultFileError) as err:
        weights.load_model(run, weights_dir=tmp_path)
    assert str(tmp_path / f"{run}.pt") in str(err.value) and "git checkout" in str(err.value)


# --- output directories: checked before any work -------------------------------------------------

def test_output_dir_that_is_a_file(tmp_path, monkeypatch, capsys):
    no_data_loading(monkeypatch)
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(paths.OutputDirError, match="is a file, not a directory"):
        fit(TrainConfig(**FAST), out_dir=tmp_path / "taken", quiet=True)
    with pytest.raises(paths.OutputDirError, match="a part of the path is a file"):
        fit_or_load(TrainConfig(**FAST), tmp_path / "taken" / "run", quiet=True)
    code, output = cli(capsys, "train", "--model", "lenet", "--out", str(tmp_path / "taken"))
    assert code == 2 and "is a file, not a directory" in output and "Traceback" not in output


def not_writable_dir(tmp_path: Path) -> Path:
    if os.geteuid() == 0:  # root writes through permissions; /proc's directories refuse everyone
        return Path("/proc/self")
    target = tmp_path / "read-only"
    target.mkdir()
    target.chmod(0o500)
    return target


def test_output_dir_not_writable(tmp_path, monkeypatch, capsys):
    no_data_loading(monkeypatch)
    target = not_writable_dir(tmp_path)
    with pytest.raises(paths.OutputDirError, match="is not writable"):
        fit(TrainConfig(**FAST), out_dir=target, quiet=True)
    code, output = cli(capsys, "train", "--model", "lenet", "--out", str(target))
    assert code == 2 and f"run directory {target} is not writable" in output


def test_bench_output_checked_before_measuring(tmp_path, monkeypatch, capsys):
    from squeezestudy.speed import bench

    monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("measured before checking --out"))
    (tmp_path / "taken").write_text("a file")
    code, output = cli(capsys, "bench", "--models", "lenet", "--device", "cpu",
                       "--out", str(tmp_path / "taken"))
    assert code == 2 and "is a file, not a directory" in output


# --- model_kwargs --------------------------------------------------------------------------------

def test_unknown_model_kwarg_lists_the_accepted_ones():
    with pytest.raises(ValueError, match=r"'sr' not accepted by the builder of 'lenet'; it accepts: "
                                         r"num_classes, in_channels, activation, pool"):
        TrainConfig(model="lenet", model_kwargs={"sr": 0.25})
    with pytest.raises(ValueError, match="must be a mapping"):
        TrainConfig(model="lenet", model_kwargs=[("sr", 0.25)])
    assert TrainConfig(model="squeezenet_design", model_kwargs={"sr": 0.25, "pct3x3": 0.75})


def test_model_kwarg_value_refused_before_the_data_is_loaded(monkeypatch):
    no_data_loading(monkeypatch)
    with pytest.raises(ValueError, match=r"model 'lenet' cannot be built with model_kwargs "
                                         r"\{'activation': 'swish'\}"):
        fit(TrainConfig(model="lenet", device="cpu", model_kwargs={"activation": "swish"}), quiet=True)


@pytest.mark.parametrize("kwargs, expected", [
    ("[1, 2]", "must be a JSON object"),
    ("{sr: 1}", "is not valid JSON"),
    ('{"sr": 0.25}', "it accepts: num_classes, in_channels, activation, pool"),
    ('{"activation": "swish"}', "cannot be built with model_kwargs"),
])
def test_model_kwargs_on_the_command_line(kwargs, expected, tmp_path, capsys, monkeypatch):
    no_data_loading(monkeypatch)
    code, output = cli(capsys, "train", "--model", "lenet", "--device", "cpu", "--model-kwargs", kwargs,
                       "--out", str(tmp_path / "run"))
    assert code == 2 and expected in output and "Traceback" not in output


# --- every other user mistake on the command line: exit 2, one message ---------------------------

TRAIN_MISTAKES = [
    (["--model", "vgg"], "unknown model 'vgg'; known models"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--device", "cuda:7"] if torch.cuda.is_available() else ["--device", "cuda"], "device 'cuda"),
    (["--precision", "fp16"], "unknown precision 'fp16'"),
    (["--epochs", "0"], "epochs must be at least 1"),
    (["--batch-size", "-5"], "batch_size must be at least 1"),
    (["--lr", "nan"], "lr must be a positive number"),
    (["--weight-decay", "-1"], "weight_decay must be >= 0"),
    (["--label-smoothing", "1.5"], "label_smoothing must be in [0, 1)"),
    (["--seed", "-1"], "seed must be in 0.."),
    (["--optimizer", "lion"], "unknown optimizer 'lion'"),
    (["--schedule", "step"], "unknown schedule 'step'"),
    (["--train-subset", "0"], "train_subset must be at least 10"),
    (["--train-subset", "50", "--batch-size", "100"], "gives 50 training images, fewer than one batch"),
]


@pytest.mark.parametrize("argv, expected", TRAIN_MISTAKES, ids=[" ".join(a) for a, _ in TRAIN_MISTAKES])
def test_train_usage_errors(argv, expected, tmp_path, capsys, monkeypatch):
    no_data_loading(monkeypatch)
    code, output = cli(capsys, "train", "--out", str(tmp_path / "run"), *argv)
    assert code == 2, output
    assert expected in output and output.startswith("error: ") and "Traceback" not in output
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_train_subset_larger_than_the_training_split(tiny):
    with pytest.raises(ValueError, match="train_subset 5,000 is more than the 500 training images"):
        fit(TrainConfig(**{**FAST, "train_subset": 5000}), tiny, quiet=True)


@pytest.fixture
def no_env_data(monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)


@pytest.mark.parametrize("case", ["missing", "empty", "a file", "env var to a file", "corrupt file"])
def test_data_dir_mistakes(case, tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("not a directory")
    (tmp_path / "empty").mkdir()
    argv, expected = {
        "missing": (["--dir", str(tmp_path / "nowhere")], "does not exist"),
        "empty": (["--dir", str(tmp_path / "empty")], "it is empty"),
        "a file": (["--dir", str(tmp_path / "file")], "is a file, not a directory"),
        "env var to a file": ([], "($FASHION_MNIST_DIR) is a file"),
        "corrupt file": (["--dir", str(tmp_path / "bad")], "bad magic number"),
    }[case]
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "file"))
    (tmp_path / "bad").mkdir()
    for stem in (stem for pair in data.FILES.values() for stem in pair[:2]):
        (tmp_path / "bad" / stem).write_bytes(b"\x01\x02\x03\x04" * 4)
    code, output = cli(capsys, "data", *argv)
    assert code == 2 and expected in output and "Traceback" not in output
    if case != "corrupt file":
        assert data.ENV_VAR in output  # and says where to put the files


def test_train_with_a_missing_data_dir(tmp_path, capsys):
    code, output = cli(capsys, "train", "--model", "lenet", "--device", "cpu", "--data-dir",
                       str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"))
    assert code == 2 and "does not exist" in output and "Traceback" not in output


@pytest.mark.parametrize("argv, expected", [
    (["--models", "vgg"], "unknown model 'vgg'; known models"),
    (["--steps", "0"], "--steps and --repeats must be >= 1"),
    (["--workers", "-1"], "--workers >= 0"),
    (["--device", "tpu"], "unknown device 'tpu'"),
])
def test_bench_usage_errors(argv, expected, tmp_path, capsys, monkeypatch):
    from squeezestudy.speed import bench

    monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("measured despite a usage error"))
    code, output = cli(capsys, "bench", "--out", str(tmp_path), *argv)
    assert code == 2 and expected in output and "Traceback" not in output


# --- what the user reads --------------------------------------------------------------------------

def test_fit_names_the_device_once(tiny, capsys):
    fit(TrainConfig(**{**FAST, "epochs": 1}), tiny)
    first_line = capsys.readouterr().out.splitlines()[0]
    assert "cpu (cpu" not in first_line and ", cpu (" in first_line


def test_display_path_inside_and_outside_the_repo(tmp_path):
    assert paths.display_path(paths.REPO_ROOT / "outputs" / "runs" / "x") == "outputs/runs/x"
    assert paths.display_path(tmp_path / "elsewhere") == str(tmp_path.resolve() / "elsewhere")


# --- every file written atomically ----------------------------------------------------------------

def test_figures_are_written_atomically(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from squeezestudy.analysis import plots

    fig, _ = plt.subplots()
    plots.save(fig, tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setattr(fig, "savefig", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        plots.save(fig, tmp_path / "f.png")  # interrupted: the old figure stays, no partial file
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png"]
    plt.close(fig)


class FakeTorchvision:
    """torchvision's FashionMNIST without a network: writes the raw files, or fails midway."""

    fail_after: int | None = None

    def __init__(self, root, train=True, download=True):
        raw = Path(root) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        prefix = "train" if train else "t10k"
        write_idx(raw / f"{prefix}-images-idx3-ubyte", np.zeros((1, 28, 28)))
        if FakeTorchvision.fail_after == 1:
            raise OSError("connection reset")
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.zeros(1))


@pytest.mark.parametrize("fails", [False, True])
def test_download_puts_whole_files_in_place_or_none(tmp_path, monkeypatch, fails):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeTorchvision)
    monkeypatch.setattr(FakeTorchvision, "fail_after", 1 if fails else None)
    raw = tmp_path / "FashionMNIST" / "raw"
    if fails:
        with pytest.raises(OSError, match="connection reset"):
            data.download_to(raw)
        assert list(raw.iterdir()) == []
    else:
        data.download_to(raw)
        assert sorted(p.name for p in raw.iterdir()) == sorted(
            stem for pair in data.FILES.values() for stem in pair[:2])
    assert [p.name for p in raw.parent.iterdir()] == ["raw"]  # no scratch folder left


# --- the IDX reader under generated, truncated and bit-flipped files (hypothesis) ----------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

arrays = st.integers(1, 3).flatmap(lambda ndim: hnp.arrays(
    np.uint8, hnp.array_shapes(min_dims=ndim, max_dims=ndim, min_side=1, max_side=5)))
PROPERTY = settings(max_examples=100, deadline=None)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("idx")


def written(scratch: Path, array: np.ndarray, gz: bool) -> Path:
    return write_idx(scratch / f"a-idx{array.ndim}-ubyte{'.gz' if gz else ''}", array)


def read_or_idx_error(path: Path, ndim: int | None):
    """The reader's result, or its own error naming the file; any other exception fails."""
    from squeezestudy.data.idx import read_idx

    try:
        return read_idx(path, expected_ndim=ndim)
    except IdxError as err:
        assert str(path) in str(err)
        return None


@PROPERTY
@given(array=arrays, gz=st.booleans())
def test_idx_round_trip(scratch, array, gz):
    out = read_or_idx_error(written(scratch, array, gz), array.ndim)
    assert out is not None and np.array_equal(out.numpy(), array)


@PROPERTY
@given(array=arrays, gz=st.booleans(), cut=st.floats(0, 1, exclude_max=True))
def test_idx_truncated_is_always_an_idx_error(scratch, array, gz, cut):
    path = written(scratch, array, gz)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(cut * len(raw))])
    assert read_or_idx_error(path, array.ndim) is None


@PROPERTY
@given(array=arrays, gz=st.booleans(), where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_idx_bit_flip_gives_the_data_or_an_idx_error(scratch, array, gz, where, bit):
    path = written(scratch, array, gz)
    raw = bytearray(path.read_bytes())
    position = int(where * len(raw))
    raw[position] ^= 1 << bit
    path.write_bytes(bytes(raw))
    out = read_or_idx_error(path, array.ndim)
    header = 4 + 4 * array.ndim
    if gz:  # gzip's CRC: a flip is caught, or it hit a field that does not change the data
        assert out is None or np.array_equal(out.numpy(), array)
    elif position < header:  # every header field is checked
        assert out is None
    else:  # the format has no checksum (SHA256SUMS is for that): exactly the flipped byte differs
        expected = array.copy().reshape(-1)
        expected[position - header] ^= 1 << bit
        assert out is not None and np.array_equal(out.numpy().reshape(-1), expected)


@PROPERTY
@given(raw=st.binary(max_size=64), gz=st.booleans(), compress=st.booleans(),
       ndim=st.sampled_from([None, 1, 3]))
def test_idx_arbitrary_bytes_never_raise_anything_else(scratch, raw, gz, compress, ndim):
    import gzip

    path = scratch / f"junk-idx-ubyte{'.gz' if gz else ''}"
    path.write_bytes(gzip.compress(raw) if compress else raw)
    read_or_idx_error(path, ndim)


def test_notebook_parameters_of_the_wrong_type():
    with pytest.raises(ValueError, match=r"epochs must be an integer, got 2.5; "
                                         r"lr must be a number, got '0.01'"):
        TrainConfig(lr="0.01", epochs=2.5)


def test_cli_non_finite_loss_exits_1_with_the_message(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fit_module, "train_step", lambda *a, **k: (torch.tensor(float("nan")), None, False))
    monkeypatch.setattr(data, "load", lambda *a, **k: tiny)
    code, output = cli(capsys, "train", "--model", "lenet", "--batch-size", "100", "--device", "cpu",
                       "--out", str(tmp_path / "run"))
    assert code == 1 and "error: loss is nan at epoch 1, step 1" in output and "Traceback" not in output


def test_cli_disk_failure_exits_1_and_keeps_the_previous_file(tiny, tmp_path, monkeypatch, capsys):
    for failure in (OSError(28, "No space left on device"),  # and as torch reports it:
                    RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4096 vs "
                                 "5120\nframe #0: c10::ThrowEnforceNotMet(...)\nfile write failed")):
        def full_disk(*args, error=failure, **kwargs):
            raise error

        monkeypatch.setattr(fileio, "torch_save", full_disk)
        monkeypatch.setattr(data, "load", lambda *a, **k: tiny)
        code, output = cli(capsys, "train", "--model", "lenet", "--batch-size", "100", "--device", "cpu",
                           "--epochs", "1", "--quiet", "--force", "--out", str(tmp_path / "run"))
        assert code == 1, output
        assert f"error: {tmp_path / 'run' / 'checkpoint.pt'}: could not save epoch 1 (" in output
        assert "is the disk full? no epoch is saved yet; free space, then continue with resume=True" in output
        assert "Traceback" not in output and "frame #0" not in output


# --- one writer per run directory; interrupts before a command starts (issue 24) ---------------

def test_a_second_writer_of_a_run_directory_exits_2_naming_the_first(tiny, tmp_path, capsys, monkeypatch):
    from squeezestudy.core.lock import holding

    monkeypatch.setattr(data, "load", lambda *a, **k: tiny)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from squeezestudy.core.lock import holding\n"
        f"with holding({str(run_dir)!r}):\n    print('held', flush=True); time.sleep(120)")],
        stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        code, output = cli(capsys, "train", "--model", "lenet", "--epochs", "1", "--batch-size", "100",
                           "--device", "cpu", "--out", str(run_dir))
        assert code == 2, output
        assert f"{run_dir} is being trained by process {holder.pid} (host " in output
        assert "Traceback" not in output and not (run_dir / rundir.CHECKPOINT).exists()
    finally:
        holder.kill()
        holder.wait()
    with holding(run_dir):  # the holder was killed: its lock is stale, and taken over
        pass


def test_an_interrupt_while_the_command_line_loads_is_one_line(monkeypatch, capsys):
    import squeezestudy.cli as cli_module

    def slow_parser():
        raise KeyboardInterrupt  # Ctrl-C while torch is imported for the parser
    monkeypatch.setattr(cli_module, "build_parser", slow_parser)
    assert cli_module.main(["bench"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "interrupted" and "Traceback" not in err


def test_a_bit_flipped_in_a_checkpoint_tensor_is_found(tiny, tmp_path):
    """torch.load reads a checkpoint whose tensor bytes changed without a word; its digest does not."""
    import struct
    import zipfile

    fit(TrainConfig(**{**FAST, "epochs": 1}), tiny, out_dir=tmp_path, quiet=True)
    path = tmp_path / rundir.CHECKPOINT
    assert "digest" in rundir.read_checkpoint(path)
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as z:
        spans = []
        for info in z.infolist():
            if "/data/" in info.filename and info.file_size > 0:  # (stored, not deflated)
                name_len, extra_len = struct.unpack_from("<HH", raw, info.header_offset + 26)
                spans.append((info.header_offset + 30 + name_len + extra_len, info.file_size))
    rng = np.random.default_rng(1)
    for _ in range(10):
        start, size = spans[int(rng.integers(len(spans)))]
        flipped = bytearray(raw)
        flipped[start + int(rng.integers(size))] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(flipped))
        with pytest.raises(rundir.ResultFileError,
                           match=r"checkpoint\.pt.*(checksum differs|cannot be read)"):
            rundir.read_checkpoint(path)
    path.write_bytes(raw)
    rundir.read_checkpoint(path)  # and the file as saved reads back

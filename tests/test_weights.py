"""The committed weights: a model loaded by run name predicts what its run recorded."""

from __future__ import annotations

import hashlib

import pytest
import torch

from squeezestudy.core.paths import RUNS_DIR
from squeezestudy.data import fashion_mnist as data
from squeezestudy.runs import weights
from squeezestudy.runs.finished import load_predictions
from squeezestudy.training import evaluate

N_IMAGES = 500  # the first 500 test images


@pytest.mark.parametrize("run", weights.available())
def test_loaded_model_matches_the_runs_predictions(run, fashion_mnist):
    model = weights.load_model(run)
    assert not model.training
    mean, std = fashion_mnist.mean_std()
    metrics = weights.read_metrics(RUNS_DIR / run / "metrics.json")
    if metrics["test_acc"] is None:  # a sealed search run: no test predictions, its validation score
        val = data.Batches(fashion_mnist.val, 1000, mean=mean, std=std,
                           image_size=weights.input_spec(run)["image_size"])
        assert abs(evaluate.evaluate(model, val)[1] - metrics["val_acc"]) <= 0.002
        return
    first = data.Split(fashion_mnist.test.images[:N_IMAGES], fashion_mnist.test.labels[:N_IMAGES])
    ours = evaluate.predict(model, data.Batches(first, 250, mean=mean, std=std)).argmax(1)
    recorded = load_predictions(RUNS_DIR / run)[0][:N_IMAGES]
    assert evaluate.accuracy(ours, first.labels) == evaluate.accuracy(recorded, first.labels)
    assert (ours == recorded).float().mean().item() >= 0.998  # argmax ties may differ, nothing more


def test_the_small_models_of_the_note_are_committed():
    assert {"lenet-s0", "squeezenet_fmnist-s0"} <= set(weights.available())


def test_every_finished_run_under_the_size_limit_has_its_weights():
    from squeezestudy.analysis.results import collect_runs
    from squeezestudy.runs.finished import keeps_weights

    runs = collect_runs(RUNS_DIR)
    small = set(runs.run[runs.params.map(keeps_weights)])
    assert small and not small - set(weights.available()), sorted(small - set(weights.available()))
    assert set(weights.available()) <= set(runs.run)  # no weight file without its run


def test_every_weight_file_is_a_plain_fp32_state_dict():
    for run in weights.available():
        state = torch.load(weights.path(run), map_location="cpu", weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in state.values())
        assert all(v.dtype in (torch.float32, torch.int64) for v in state.values()), run


def test_unknown_run_says_what_is_available_and_how_to_get_it(tmp_path):
    with pytest.raises(weights.WeightsNotFoundError, match=r"never trained.*lenet-s0.*make study"):
        weights.load_model("lenet-s9")


def test_a_run_too_large_to_commit_says_it_needs_a_gpu():
    """AlexNet-112's runs are finished but their 99 MB weights are not committed: the error says
    what works for that run (a GPU, a forced re-run), not a batch command that would skip it."""
    with pytest.raises(weights.WeightsNotFoundError, match=r"finished run.*99 MB.*GPU.*--force"):
        weights.load_model("alexnet-s0")


def test_a_deleted_weight_file_says_how_to_restore_it(tmp_path):
    with pytest.raises(weights.WeightsNotFoundError, match=r"git checkout"):
        weights.load_model("lenet-s0", weights_dir=tmp_path)


def test_the_normalisation_constants_are_the_training_splits(fashion_mnist):
    assert fashion_mnist.mean_std() == (data.TRAIN_MEAN, data.TRAIN_STD)
    spec = weights.input_spec("alexnet-s0")
    assert spec == {"image_size": 112, "mean": data.TRAIN_MEAN, "std": data.TRAIN_STD}


CHOSEN = "headline-b96aug60-s0"  # the headline recipe the study chose (notebook 12), seed 0


def test_predict_on_raw_test_images_gives_the_runs_recorded_accuracy(fashion_mnist):
    images, labels = fashion_mnist.test.images[:1000], fashion_mnist.test.labels[:1000]
    predicted = weights.predict(CHOSEN, images)  # uint8 (N, 28, 28), as read from the IDX file
    assert predicted.dtype == torch.int64 and predicted.shape == (1000,)
    recorded = load_predictions(RUNS_DIR / CHOSEN)[0][:1000]
    assert evaluate.accuracy(predicted, labels) == evaluate.accuracy(recorded, labels) > 0.9
    model = weights.load_model(CHOSEN)
    assert torch.equal(weights.predict(CHOSEN, images[:, None].numpy(), model=model), predicted)


def test_predict_takes_pil_images_and_refuses_what_it_cannot_read(fashion_mnist):
    from PIL import Image

    images = fashion_mnist.test.images[:20]
    pil = [Image.fromarray(i.numpy()) for i in images]
    model = weights.load_model("lenet-s0")
    expected = weights.predict("lenet-s0", images, model=model)
    assert torch.equal(weights.predict("lenet-s0", pil, model=model), expected)
    assert torch.equal(weights.predict("lenet-s0", pil[3], model=model), expected[3:4])
    assert torch.equal(weights.predict("lenet-s0", images[3], model=model), expected[3:4])
    with pytest.raises(TypeError, match="uint8"):
        weights.predict("lenet-s0", images.float() / 255, model=model)
    with pytest.raises(ValueError, match=r"expected \(N, 28, 28\)"):
        weights.predict("lenet-s0", images[:, None, None], model=model)
    with pytest.raises(ValueError, match="no images"):
        weights.predict("lenet-s0", [], model=model)


def test_export_round_trips_a_checkpoint(tmp_path, small_fashion_mnist):
    from squeezestudy.training.config import TrainConfig
    from squeezestudy.training.loop import fit

    config = TrainConfig(model="lenet", epochs=1, batch_size=128, train_subset=2000, device="cpu")
    result = fit(config, small_fashion_mnist, out_dir=tmp_path / "runs" / "tiny", quiet=True)
    written = weights.export("tiny", runs_dir=tmp_path / "runs", weights_dir=tmp_path / "weights")
    assert written == tmp_path / "weights" / "tiny.pt"
    model = weights.load_model("tiny", weights_dir=tmp_path / "weights", runs_dir=tmp_path / "runs")
    for ours, theirs in zip(model.state_dict().values(), result.model.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs.cpu().float() if theirs.is_floating_point() else theirs.cpu())


def test_export_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(weights.WeightsNotFoundError, match="checkpoint"):
        weights.export("nothing", runs_dir=tmp_path, weights_dir=tmp_path)
    assert weights.main(["export", "nothing-here-s0"]) == 1
    assert weights.main([]) == 2


def test_a_finished_study_run_exports_its_weights(tmp_path, small_fashion_mnist, monkeypatch):
    from squeezestudy.core import paths
    from squeezestudy.runs.finished import load_trained_model
    from squeezestudy.runs.study import fit_or_load
    from squeezestudy.training.config import TrainConfig

    runs, weights_dir = tmp_path / "runs", tmp_path / "weights"
    monkeypatch.setattr(paths, "RUNS_DIR", runs)
    monkeypatch.setattr(paths, "WEIGHTS_DIR", weights_dir)
    config = TrainConfig(model="lenet", epochs=1, train_subset=300, batch_size=100, device="cpu")
    fit_or_load(config, runs / "lenet-s0", quiet=True, dataset=small_fashion_mnist)
    exported = torch.load(weights_dir / "lenet-s0.pt")
    model, _ = load_trained_model(runs / "lenet-s0")
    assert all(torch.equal(exported[k], v) for k, v in model.state_dict().items())
    fit_or_load(config, tmp_path / "elsewhere" / "lenet-s1", quiet=True, dataset=small_fashion_mnist)
    assert not (weights_dir / "lenet-s1.pt").exists()  # only runs of the study's runs directory


# --- a weight file is the one exported for its run (issue 24) -------------------------------------

def test_a_changed_or_foreign_weight_file_is_refused_naming_it(tmp_path):
    import shutil

    from squeezestudy.core.paths import WEIGHTS_DIR

    shutil.copy(WEIGHTS_DIR / "lenet-s0.pt", tmp_path / "lenet-s0.pt")
    shutil.copy(WEIGHTS_DIR / weights.DIGESTS, tmp_path / weights.DIGESTS)
    weights.load_model("lenet-s0", weights_dir=tmp_path)  # the exported file loads
    raw = bytearray((tmp_path / "lenet-s0.pt").read_bytes())
    raw[len(raw) // 2] ^= 0x10  # one bit, inside a tensor: torch.load would not notice
    (tmp_path / "lenet-s0.pt").write_bytes(bytes(raw))
    with pytest.raises(weights.WeightsFileError, match=r"lenet-s0\.pt: not the file that was exported"):
        weights.load_model("lenet-s0", weights_dir=tmp_path)
    # another model's file under this name, recorded as if exported: the architecture is named
    shutil.copy(WEIGHTS_DIR / "squeezenet_fmnist-s0.pt", tmp_path / "lenet-s0.pt")
    weights._record_digest(tmp_path / "lenet-s0.pt")
    with pytest.raises(weights.WeightsFileError, match=r"lenet-s0\.pt: its weights do not fit lenet-s0's "
                                                       r"lenet .*another model's file"):
        weights.load_model("lenet-s0", weights_dir=tmp_path)
    (tmp_path / weights.DIGESTS).write_text("")  # an empty record: every file is unlisted
    (tmp_path / weights.DIGESTS).write_text("0" * 64 + "  other.pt\n")
    with pytest.raises(weights.WeightsFileError, match=r"not in .*SHA256SUMS"):
        weights.load_model("lenet-s0", weights_dir=tmp_path)


def test_every_committed_weight_file_is_recorded():
    from squeezestudy.core.paths import WEIGHTS_DIR

    recorded = weights.digests()
    assert sorted(recorded) == sorted(p.name for p in WEIGHTS_DIR.glob("*.pt"))
    for name, digest in recorded.items():
        assert hashlib.sha256((WEIGHTS_DIR / name).read_bytes()).hexdigest() == digest, name

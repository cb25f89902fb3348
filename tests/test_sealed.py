"""The search's sealed test split, the moving average of the weights and random erasing (issue 25):
a sealed run never evaluates the test images; `unseal` opens them once and records when."""

import json

import pytest
import torch

from squeezestudy.data import fashion_mnist as data
from squeezestudy.runs import sealed
from squeezestudy.runs.finished import load_trained_model
from squeezestudy.runs.study import fit_or_load
from squeezestudy.training import rundir
from squeezestudy.training.config import TrainConfig
from squeezestudy.training.loop import fit

FAST = dict(model="lenet", epochs=2, batch_size=200, lr=0.003, device="cpu", precision="fp32")


def test_a_sealed_run_never_evaluates_the_test_split(small_fashion_mnist, tmp_path, monkeypatch):
    from squeezestudy.training import loop as train_module

    seen = []
    real = train_module.evaluate

    def watching(model, batches, *args, **kwargs):
        seen.append(len(batches.labels))
        return real(model, batches, *args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate", watching)
    result = fit(TrainConfig(**FAST, sealed=True), small_fashion_mnist, out_dir=tmp_path / "r", quiet=True)
    assert seen == [len(small_fashion_mnist.val)] * 2  # validation only, once an epoch
    assert "test_acc" not in result.history and result.metrics["test_acc"] is None
    assert result.metrics["sealed"] is True
    assert not (tmp_path / "r" / rundir.PREDICTIONS).exists()
    metrics, history = rundir.read_finished(tmp_path / "r")  # a consistent finished run
    assert metrics["val_acc"] == history.val_acc.iloc[-1]


def test_unseal_opens_the_test_split_once_and_records_when(small_fashion_mnist, tmp_path):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        fit_or_load(TrainConfig(**FAST, seed=seed, sealed=True), runs / f"rec-s{seed}", quiet=True,
                    dataset=small_fashion_mnist)
    log = tmp_path / "unsealed.csv"
    lines = []
    first = sealed.unseal(["rec-s"], small_fashion_mnist, runs, log, echo=lines.append)
    assert [m["seed"] for m in first] == [0, 1]
    for seed, m in enumerate(first):
        assert 0 < m["test_acc"] <= 1 and m["unsealed_at"]
        stored, _ = rundir.read_finished(runs / f"rec-s{seed}")  # predictions now belong to it
        assert stored["test_acc"] == m["test_acc"]
    assert log.read_text().splitlines()[0] == ",".join(sealed.LOG_COLUMNS)
    assert len(log.read_text().splitlines()) == 3
    again = sealed.unseal(["rec-s0"], small_fashion_mnist, runs, log, echo=lines.append)
    assert again[0]["unsealed_at"] == first[0]["unsealed_at"] and "unsealed already" in lines[-1]
    assert len(log.read_text().splitlines()) == 3
    # the finished, unsealed run is read back by the batch, not retrained
    metrics, _ = fit_or_load(TrainConfig(**FAST, seed=0, sealed=True), runs / "rec-s0", quiet=True,
                             dataset=small_fashion_mnist)
    assert metrics["unsealed_at"] == first[0]["unsealed_at"]


def test_unseal_refuses_runs_that_were_not_sealed_or_do_not_exist(small_fashion_mnist, tmp_path):
    fit(TrainConfig(**FAST), small_fashion_mnist, out_dir=tmp_path / "open-s0", quiet=True)
    with pytest.raises(sealed.SealError, match="not trained sealed"):
        sealed.unseal(["open-s0"], small_fashion_mnist, tmp_path, tmp_path / "log.csv")
    with pytest.raises(sealed.SealError, match="no run 'nothing'"):
        sealed.unseal(["nothing"], small_fashion_mnist, tmp_path, tmp_path / "log.csv")


def test_the_moving_average_is_evaluated_kept_and_resumed(small_fashion_mnist, tmp_path, interrupted_fit):
    cfg = TrainConfig(**{**FAST, "epochs": 3}, ema=0.9, erase=0.5, augment=True, sealed=True)
    straight = fit(cfg, small_fashion_mnist, out_dir=tmp_path / "a", quiet=True)
    kept, _ = load_trained_model(tmp_path / "a")
    for (name, a), b in zip(straight.model.state_dict().items(), kept.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # the final weights are the average
    state = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    raw = next(iter(state["model"].values()))
    assert "ema" in state and not torch.equal(raw, next(iter(kept.state_dict().values())))

    interrupted_fit(3, cfg, small_fashion_mnist, out_dir=tmp_path / "b")  # sealed: in epoch 3
    resumed = fit(cfg, small_fashion_mnist, out_dir=tmp_path / "b", quiet=True, resume=True)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    assert resumed.history.val_acc.tolist() == straight.history.val_acc.tolist()


def test_random_erasing_zeroes_one_rectangle_of_the_chosen_images():
    images = torch.full((400, 28, 28), 255, dtype=torch.uint8)
    split = data.Split(images, torch.zeros(400, dtype=torch.long))
    batches = data.Batches(split, 400, mean=0.0, std=1.0, erase=0.5)
    batches.set_seed(0)
    erased = batches._erase(images)
    zeros = (erased == 0).flatten(1).sum(1)
    hit = zeros > 0
    assert 0.4 < hit.float().mean() < 0.6  # about half the images
    assert zeros[hit].min() >= 1 and zeros[hit].max() <= 0.25 * 28 * 28 * 1.3
    for i in torch.nonzero(hit).flatten()[:20]:  # one axis-aligned rectangle each
        rows, cols = torch.nonzero(erased[i] == 0, as_tuple=True)
        assert zeros[i] == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    batches.set_seed(0)
    assert torch.equal(batches._erase(images), erased)  # seeded: a resumed run erases the same
    with pytest.raises(ValueError, match="erase"):
        data.Batches(split, 10, mean=0.0, std=1.0, erase=1.5)
    with pytest.raises(ValueError, match="ema"):
        TrainConfig(**FAST, ema=1.0)


def test_old_runs_read_back_unchanged_with_the_new_options():
    """Runs recorded before erase, ema and sealed existed match configs at their defaults."""
    from squeezestudy.core.paths import RUNS_DIR

    stored = json.loads((RUNS_DIR / "headline-b96aug60-s0" / "metrics.json").read_text())["config"]
    assert TrainConfig(**stored).same_as(stored) and "sealed" not in stored

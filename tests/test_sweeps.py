import json

import numpy as np
import pandas as pd
import pytest
import torch

from squeezestudy.analysis import sweeps
from squeezestudy.data.fashion_mnist import Batches
from squeezestudy.runs.finished import load_trained_model
from squeezestudy.training.config import TrainConfig
from squeezestudy.training.evaluate import evaluate
from squeezestudy.training.loop import fit
from squeezestudy.training.rundir import CHECKPOINT


def fake_run(runs_dir, name, test_acc, seed=0, params=1000, **model_kwargs):
    """A finished run as the batch leaves it: metrics.json (and a history) in its directory."""
    config = TrainConfig(model="squeezenet_design", model_kwargs=model_kwargs, seed=seed)
    metrics = {"model": config.model, "seed": seed, "precision": "fp32", "device": "cpu",
               "epochs": config.epochs, "params": params, "test_acc": test_acc, "val_acc": test_acc,
               "train_acc": test_acc + 0.01, "train_time_s": 1.0, "images_per_s": 1.0,
               "config": config.to_dict()}
    (runs_dir / name).mkdir(parents=True)
    (runs_dir / name / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def sr_sweep(tmp_path):
    for i, (sr, accs) in enumerate({0.125: (0.80, 0.82), 0.5: (0.86, 0.88), 1.0: (0.87, 0.87)}.items()):
        for seed, acc in enumerate(accs):
            fake_run(tmp_path, f"design-sr{sr}-s{seed}", acc, seed=seed, params=1000 * (i + 1), sr=sr)
    fake_run(tmp_path, "lenet-s0", 0.9)
    return tmp_path


def test_collect_matches_whole_names_and_spreads_model_kwargs(sr_sweep):
    runs = sweeps.collect(r"design-sr[\d.]+-s\d", sr_sweep)
    assert len(runs) == 6 and "lenet-s0" not in set(runs.run)
    assert sorted(runs.sr.unique()) == [0.125, 0.5, 1.0]
    assert runs.loc[runs.run == "design-sr1.0-s0", "size_MB"].item() == pytest.approx(3000 * 4 / 1e6)
    with pytest.raises(FileNotFoundError, match="no finished run .* matches 'bypass-.*'; run its sweep"):
        sweeps.collect("bypass-.*", sr_sweep)


def test_points_and_plateau(sr_sweep):
    table = sweeps.points(sweeps.collect(r"design-sr[\d.]+-s\d", sr_sweep), "sr")
    assert list(table.index) == [0.125, 0.5, 1.0]
    assert table.loc[0.5, "test_acc_mean"] == pytest.approx(0.87)
    assert table.loc[0.125, "seeds"] == 2 and table.loc[1.0, "test_acc_std"] == 0
    # Two seeds a point: 0.125 (0.81 +- 0.014) against the best, 0.5 (0.87 +- 0.014): Welch's
    # interval of the difference (df 2) is 0.06 +- 0.061, it spans zero: not distinguishable.
    assert sweeps.plateau(table) == 0.125
    assert not sweeps.against_best(table, 0.125).distinguishable
    sharper = table.assign(test_acc_std=0.001)  # little seed noise: only the best point qualifies
    sharper.loc[1.0, "test_acc_mean"] = 0.9
    assert sweeps.plateau(sharper) == 1.0
    sharper.loc[0.5, "test_acc_mean"] = 0.8995  # within noise of the best
    assert sweeps.plateau(sharper) == 0.5
    single = table.assign(seeds=1)  # one seed a point: nothing testable, the best point stands
    assert sweeps.plateau(single) == table.test_acc_mean.idxmax()


def test_a_class_never_predicted_is_counted(sr_sweep):
    pred = np.arange(10_000) % 10
    np.savez_compressed(sr_sweep / "design-sr0.5-s0" / "predictions.npz", pred=pred.astype(np.uint8),
                        confidence=np.ones(10_000, np.float16))
    pred[pred == 5] = 6  # class 5 died
    np.savez_compressed(sr_sweep / "design-sr0.5-s1" / "predictions.npz", pred=pred.astype(np.uint8),
                        confidence=np.ones(10_000, np.float16))
    runs = sweeps.collect(r"design-sr[\d.]+-s\d", sr_sweep).set_index("run")
    assert runs.classes_predicted.to_dict() == {"design-sr0.125-s0": -1, "design-sr0.125-s1": -1,
                                                "design-sr0.5-s0": 10, "design-sr0.5-s1": 9,
                                                "design-sr1.0-s0": -1, "design-sr1.0-s1": -1}
    table = sweeps.points(runs.reset_index(), "sr")
    assert table.runs_with_dead_class.tolist() == [0, 1, 0]


def test_train_accuracy_evaluates_the_final_model_in_eval_mode(small_fashion_mnist, tmp_path):
    config = TrainConfig(model="squeezenet_fmnist", epochs=1, train_subset=500)
    fit(config, small_fashion_mnist, out_dir=tmp_path / "run", quiet=True)
    table = sweeps.train_accuracy([tmp_path / "run"], small_fashion_mnist)
    model, _ = load_trained_model(tmp_path / "run")
    mean, std = small_fashion_mnist.mean_std()
    batches = Batches(small_fashion_mnist.train.subset(500), 500, mean=mean, std=std,
                      device=torch.device("cpu"))
    assert table.run.tolist() == ["run"]
    assert table.train_eval_acc.item() == pytest.approx(evaluate(model, batches)[1])


def test_cached_train_accuracy_adds_only_the_runs_the_cache_lacks(small_fashion_mnist, tmp_path):
    config = TrainConfig(model="squeezenet_fmnist", epochs=1, train_subset=500)
    fit(config, small_fashion_mnist, out_dir=tmp_path / "runs" / "new", quiet=True)
    cache = tmp_path / "train_accuracy.csv"
    cache.write_text("run,train_eval_acc,train_eval_loss\nold,0.5,1.0\n")  # old: no checkpoint
    table = sweeps.cached_train_accuracy(["new", "old"], cache, tmp_path / "runs",
                                         load_dataset=lambda: small_fashion_mnist)
    assert table.run.tolist() == ["new", "old"]
    assert table.train_eval_acc.tolist()[1] == 0.5  # read, not recomputed
    expected = sweeps.train_accuracy([tmp_path / "runs" / "new"], small_fashion_mnist).train_eval_acc.item()
    assert table.train_eval_acc.tolist()[0] == pytest.approx(expected)
    reread = sweeps.cached_train_accuracy(["old", "new"], cache, tmp_path / "runs")  # now cached
    assert reread.train_eval_acc.tolist() == pytest.approx([0.5, expected])


def test_cached_train_accuracy_recomputes_a_retrained_run(small_fashion_mnist, tmp_path):
    config = TrainConfig(model="squeezenet_fmnist", epochs=1, train_subset=500)
    run_dir = tmp_path / "runs" / "new"
    fit(config, small_fashion_mnist, out_dir=run_dir, quiet=True)
    finished_at = json.loads((run_dir / "metrics.json").read_text())["finished_at"]
    cache = tmp_path / "train_accuracy.csv"
    # a row of this training is read as it is; a row of an earlier training of the run is not
    cache.write_text(f"run,finished_at,train_eval_acc,train_eval_loss\nnew,{finished_at},0.5,1.0\n")
    assert sweeps.cached_train_accuracy(["new"], cache, tmp_path / "runs").train_eval_acc.item() == 0.5
    cache.write_text("run,finished_at,train_eval_acc,train_eval_loss\nnew,2020-01-01T00:00:00+0000,0.5,1.0\n")
    with pytest.raises(FileNotFoundError, match=r"holds an earlier training of \['new'\]"):
        sweeps.cached_train_accuracy(["new"], cache, tmp_path / "runs")  # read-only: cannot mend
    table = sweeps.cached_train_accuracy(["new"], cache, tmp_path / "runs",
                                         load_dataset=lambda: small_fashion_mnist)
    expected = sweeps.train_accuracy([run_dir], small_fashion_mnist)
    assert table.train_eval_acc.item() == pytest.approx(expected.train_eval_acc.item())
    assert table.finished_at.item() == finished_at
    assert len(pd.read_csv(cache)) == 1  # the stale row replaced, not kept beside the new one


def test_cached_train_accuracy_names_runs_it_cannot_compute(small_fashion_mnist, tmp_path):
    cache = tmp_path / "train_accuracy.csv"
    cache.write_text("run,train_eval_acc,train_eval_loss\nold,0.5,1.0\n")
    with pytest.raises(FileNotFoundError, match=r"lacks \['gone'\].*no checkpoint"):
        sweeps.cached_train_accuracy(["old", "gone"], cache, tmp_path / "runs",
                                     load_dataset=lambda: small_fashion_mnist)
    (tmp_path / "runs" / "new").mkdir(parents=True)
    (tmp_path / "runs" / "new" / CHECKPOINT).write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="outside smoke mode"):
        sweeps.cached_train_accuracy(["new"], cache, tmp_path / "runs")
    assert cache.read_text() == "run,train_eval_acc,train_eval_loss\nold,0.5,1.0\n"

import json

import pytest
from squeezestudy import report, train


def fake_run(runs_dir, name, model, test_acc, seed, **model_kwargs):
    config = train.TrainConfig(model=model, model_kwargs=model_kwargs, seed=seed)
    metrics = {"model": model, "seed": seed, "precision": "fp32", "device": "cpu",
               "device_name": "cpu (x86_64, 1 threads, AVX2)", "epochs": config.epochs, "params": 100,
               "test_acc": test_acc, "val_acc": test_acc, "train_acc": test_acc, "train_time_s": 60.0,
               "images_per_s": 1.0, "config": config.to_dict()}
    (runs_dir / name).mkdir(parents=True)
    (runs_dir / name / "metrics.json").write_text(json.dumps(metrics))


def test_tables_are_written_between_markers_and_checked(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    for seed, acc in enumerate((0.90, 0.91, 0.92)):
        fake_run(runs, f"bypass-simple-s{seed}", "squeezenet_design", acc, seed, bypass="simple")
        fake_run(runs, f"bypass-complex-s{seed}", "squeezenet_design", acc + 0.01, seed, bypass="complex")
        fake_run(runs, f"design-sr0.125-s{seed}", "squeezenet_design", acc - 0.02, seed, sr=0.125)
    monkeypatch.setattr(report, "TABLES", {"bypass": report.bypass_table})
    readme = tmp_path / "README.md"
    readme.write_text("# Study\n\n<!-- report:bypass -->\nstale\n<!-- /report:bypass -->\n\nprose\n")
    assert report.main(readme, check=True, runs_dir=runs) == 1  # the committed table is stale
    assert report.main(readme, runs_dir=runs) == 0
    text = readme.read_text()
    assert "| complex | 100 | 3 | 92.00 ± 1.00 |" in text and "stale" not in text
    assert text.endswith("<!-- /report:bypass -->\n\nprose\n")
    assert report.main(readme, check=True, runs_dir=runs) == 0
    fake_run(runs, "bypass-simple-s3", "squeezenet_design", 0.95, 3, bypass="simple")  # a new seed
    assert report.main(readme, check=True, runs_dir=runs) == 1


def test_missing_or_unknown_markers_are_named():
    with pytest.raises(report.ReportError, match="lacks the markers of note"):
        report.update("no markers here", {"note": "| t |\n"})
    with pytest.raises(report.ReportError, match="marker 'other' that no table fills"):
        report.update("<!-- report:other -->\nx\n<!-- /report:other -->", {})


def test_comparison_rows_follow_their_interval(tmp_path):
    from squeezestudy.results import collect_runs

    runs = tmp_path / "runs"
    for seed in range(3):
        fake_run(runs, f"lenet-s{seed}", "lenet", 0.910 + 0.005 * seed, seed)
        fake_run(runs, f"squeezenet_fmnist-s{seed}", "squeezenet_fmnist", 0.905 + 0.004 * seed, seed)
        fake_run(runs, f"alexnet-s{seed}", "alexnet", 0.935 + 0.0005 * seed, seed)
    table = report.comparison_table(collect_runs(runs), report.COMPARISONS[:2])
    alexnet, lenet = table.splitlines()[2:]
    assert alexnet.startswith("| AlexNet-112 − one-Fire SqueezeNet | 3 / 3 | +2.65 |")
    assert alexnet.endswith("| a higher |")
    assert lenet.startswith("| LeNet − one-Fire SqueezeNet | 3 / 3 | +0.60 |")
    assert lenet.endswith("| not distinguishable |")
    with pytest.raises(report.ReportError, match="no finished run matches 'depth-fire8"):
        report.comparisons(collect_runs(runs), [("8", r"depth-fire8-s\d+", "1", r"lenet-s\d+")])

import json

import pytest

from squeezestudy.analysis import headline
from squeezestudy.report import documents as report
from squeezestudy.report import findings
from squeezestudy.report import records as record_tables
from squeezestudy.runs.finished import EXPORT_MAX_BYTES
from squeezestudy.training.config import TrainConfig


def fake_run(runs_dir, name, model, test_acc, seed, **model_kwargs):
    config = TrainConfig(model=model, model_kwargs=model_kwargs, seed=seed)
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
    from squeezestudy.analysis.results import collect_runs

    runs = tmp_path / "runs"
    for seed in range(3):
        fake_run(runs, f"lenet-s{seed}", "lenet", 0.910 + 0.005 * seed, seed)
        fake_run(runs, f"squeezenet_fmnist-s{seed}", "squeezenet_fmnist", 0.905 + 0.004 * seed, seed)
        fake_run(runs, f"alexnet-s{seed}", "alexnet", 0.935 + 0.0005 * seed, seed)
    table = report.comparison_table(collect_runs(runs), findings.COMPARISONS[:2])
    alexnet, lenet = table.splitlines()[2:]
    assert alexnet.startswith("| AlexNet-112 − one-Fire SqueezeNet | 3 / 3 | +2.65 |")
    assert alexnet.endswith("| a higher |")
    assert lenet.startswith("| LeNet − one-Fire SqueezeNet | 3 / 3 | +0.60 |")
    assert lenet.endswith("| not distinguishable |")
    with pytest.raises(report.ReportError, match="no finished run matches 'depth-fire8"):
        findings.comparisons(collect_runs(runs), [("8", r"depth-fire8-s\d+", "1", r"lenet-s\d+")])


def test_tuning_table_shows_each_kind_its_choice_and_what_was_not_cached(tmp_path, monkeypatch):
    default = {"precision": "bf16", "channels_last": True, "micro_batch": 0, "threads": 2}
    micro = {**default, "micro_batch": 128}
    groups = [{"axis": "micro_batch", "current": default,
               "rates": [{**default, "images_per_s": 100.0, "rounds": [99.0, 100.0, 101.0]},
                         {**micro, "images_per_s": 120.0, "rounds": [119.0, 120.0, 121.0]}]},
              {"axis": "confirm", "current": micro,
               "rates": [{**default, "images_per_s": 100.0, "rounds": [99.0, 100.0, 101.0]},
                         {**micro, "images_per_s": 115.0, "rounds": [114.0, 115.0, 116.0]}]}]
    entry = {"choice": micro, "default": default, "images_per_s": 115.0, "default_images_per_s": 100.0,
             "speedup": 1.15, "groups": groups, "quiet": True}
    (tmp_path / "amx").mkdir()
    (tmp_path / "amx" / "tuning.json").write_text(json.dumps({
        "machine": "cpu | test", "entries": {"lenet | batch 256 | 28x28": entry},
        "lines": ["tuning on cpu | test", "alexnet: not cached: the default's rounds spread 40%"]}))
    monkeypatch.setattr(record_tables, "BENCHMARKS", tmp_path)
    table = report.tuning_table(None)
    assert ("| amx | lenet, batch 256, 28x28 | bf16, channels_last on, micro-batch off, 2 threads | "
            "bf16, channels_last on, micro-batch 128, 2 threads | 1.15x | 4 |") in table
    assert "| amx | alexnet: not cached: the default's rounds spread 40% |  | not cached |" in table


def benchmark(model="lenet", default_rounds=(3000.0, 3600.0, 3900.0), naive_rounds=(1000.0,) * 3):
    settings = {"precision": "fp32", "channels_last": True, "batch_size": 256, "micro_batch": 128,
                "compile": False, "threads": 2}

    def record(label, rounds, pipeline="project", **changes):
        return {"model": model, "pipeline": pipeline, "precision": "fp32", "label": label,
                "images_per_s": sorted(rounds)[1], "ratio_vs_naive": sorted(rounds)[1] / 1000,
                "fraction_of_peak": 0.2, "fraction_of_theoretical": 0.1, "train_gflop_per_image": 0.001,
                "settings": {**settings, **changes}, "repeats": list(rounds),
                "ratio_rounds": [d / n for d, n in zip(rounds, naive_rounds, strict=True)]}

    records = [record("torchvision DataLoader", naive_rounds, "naive"), record("default", default_rounds),
               record("micro-batch off", (3950.0, 4000.0, 4100.0), micro_batch=0)]
    peaks = [{"precision": "fp32", "threads": 2, "gflops": 100.0, "shape": "matmul 1024",
              "theoretical_gflops": 200.0, "theoretical": "200 GFLOP/s"}]
    return {"meta": {"repeats": 3, "peaks": peaks}, "records": records}


def test_speed_table_reads_each_kinds_benchmark_and_its_verdicts(tmp_path, monkeypatch):
    for kind in ("avx2", "archive"):
        (tmp_path / kind).mkdir()
        (tmp_path / kind / "throughput.json").write_text(json.dumps(benchmark()))
    monkeypatch.setattr(record_tables, "BENCHMARKS", tmp_path)
    table = report.speed_table(None)
    assert "median of 3 rounds" in table and "| archive |" not in table
    # three rounds of 3.0, 3.6 and 3.9x: every one above 3x, but an interval (2.49-4.86) that
    # does not settle it
    assert ("| avx2 | lenet (256) | 1,000 | 3,600 (3,000-3,900) | 15 | not resolved (2.49-4.86) | 20, 10 | "
            "fp32, channels_last on, micro-batch 128, 2 threads | micro-batch off: 4,000 | "
            "not resolved (0.90) | not resolved |") in table
    assert "| avx2 | fp32 | 2 | 100 | matmul 1024 | 200 | 50% |" in report.peaks_table(None)
    for path in tmp_path.glob("*/throughput.json"):
        path.unlink()
    with pytest.raises(report.ReportError, match="no .*/<kind>/throughput.json; run `squeezestudy bench"):
        report.speed_table(None)


def test_weights_table_counts_files_per_family_and_names_the_ones_not_kept(tmp_path):
    from squeezestudy.analysis.results import collect_runs

    runs, weights_dir = tmp_path / "runs", tmp_path / "weights"
    weights_dir.mkdir()
    for seed in range(2):
        fake_run(runs, f"lenet-s{seed}", "lenet", 0.91, seed)
        fake_run(runs, f"design-sr0.{seed + 1}-s0", "squeezenet_design", 0.9, 0)
    (weights_dir / "lenet-s1.pt").write_bytes(b"x" * 1000)
    (weights_dir / "design-sr0.2-s0.pt").write_bytes(b"x" * 24)
    big = collect_runs(runs)
    big.loc[big.model == "lenet", "params"] = EXPORT_MAX_BYTES  # 4 bytes each: over the limit
    lines = report.weights_table(big, weights_dir).splitlines()
    assert lines[2] == "| `design-sr*-s*` | 100 | 1 of 2 | 24 |"
    assert lines[3] == "| `lenet-s*` | 8,388,608 | 1 of 2 (over 8 MiB: not kept) | 1,000 |"
    assert lines[4] == "| **all** |  | **2 of 4** | **1,024** (0.0 MiB) |"
    small = report.weights_table(collect_runs(runs), weights_dir)
    assert "not kept" not in small


def test_headline_table_adds_each_variant_once_a_seed_has_finished(tmp_path):
    from squeezestudy.analysis.results import collect_runs

    runs = tmp_path / "runs"
    for seed in range(3):
        fake_run(runs, f"headline-b96-s{seed}", "squeezenet_design", 0.915, seed)
        fake_run(runs, f"depth-fire8-s{seed}", "squeezenet_design", 0.915, seed)
        fake_run(runs, f"squeezenet_fmnist-s{seed}", "squeezenet_fmnist", 0.91, seed)
    for seed in range(2):
        fake_run(runs, f"alexnet-s{seed}", "alexnet", 0.935, seed)

    def table():
        found = collect_runs(runs)
        found.loc[found.model == "alexnet", "params"] = 24_744_650
        return report.headline_table(found)

    variant = findings.HEADLINE_VARIANTS[headline.BATCH_NORM_RUNS]
    assert variant not in table()
    fake_run(runs, "headline-bn-s0", "squeezenet_design", 0.925, 0, squeeze_norm=True)
    lines = table().splitlines()
    assert lines[3].startswith(f"| {variant} | 100 | yes | 1 | **92.50** | no |")
    assert findings.HEADLINE_VARIANTS[headline.REGULARISED_RUNS] not in "".join(lines)


def test_tables_live_in_any_document_once(tmp_path):
    """README and docs pages share the tables: each is filled where its marker is, and a table
    marked in two documents is an error naming both."""
    tables = {"a": "| a |\n", "b": "| b |\n"}
    texts = {"README.md": "<!-- report:a -->\nold\n<!-- /report:a -->\n",
             "docs/x.md": "text\n<!-- report:b -->\n<!-- /report:b -->\n"}
    out, changed = report.update_all(texts, tables)
    assert out["README.md"] == "<!-- report:a -->\n| a |\n<!-- /report:a -->\n"
    assert out["docs/x.md"].endswith("<!-- report:b -->\n| b |\n<!-- /report:b -->\n")
    assert sorted(changed) == ["a", "b"]
    with pytest.raises(report.ReportError, match="marked twice, in README.md and docs/x.md"):
        report.update_all({**texts, "docs/x.md": texts["docs/x.md"] + texts["README.md"]}, tables)
    with pytest.raises(report.ReportError, match="together lack the markers of b"):
        report.update_all({"README.md": texts["README.md"], "docs/y.md": ""}, tables)


def test_holm_adjusts_in_order_and_skips_untested():
    from math import isnan

    from squeezestudy.analysis import stats

    adjusted = stats.holm([0.01, float("nan"), 0.04, 0.03])
    assert adjusted[0] == pytest.approx(0.03) and isnan(adjusted[1])
    assert adjusted[3] == pytest.approx(0.06) and adjusted[2] == pytest.approx(0.06)  # monotone


# --- the runs the tables must have (issue 24) -----------------------------------------------------

def test_the_tables_expect_every_run_of_the_manifest_in_outputs_runs():
    expected = report.expected_runs()
    assert {"lenet-s1", "squeezenet_fmnist-s2", "alexnet-s1", "headline-b96aug60-s2"} <= set(expected)
    assert not any(name.startswith(("squeezenet_fmnist-g", "smoke")) for name in expected)  # other dirs


def test_a_missing_or_damaged_run_stops_the_report_naming_it(tmp_path, capsys):
    """Deleting lenet-s1's metrics.json used to recompute the tables on LeNet's other 2 seeds."""
    import shutil

    from squeezestudy.core.paths import RUNS_DIR

    runs = tmp_path / "runs"
    for name in ("lenet-s0", "lenet-s1", "lenet-s2"):
        shutil.copytree(RUNS_DIR / name, runs / name, ignore=shutil.ignore_patterns("checkpoint.pt"))
    assert report.incomplete_runs(runs, ["lenet-s0", "lenet-s1", "lenet-s2"]) == []
    (runs / "lenet-s1" / "metrics.json").unlink()
    (runs / "lenet-s2" / "history.csv").write_text("epoch\n1\n")
    problems = report.incomplete_runs(runs, ["lenet-s0", "lenet-s1", "lenet-s2", "lenet-s3"])
    assert problems[0] == "lenet-s1 (missing: no metrics.json)"
    assert problems[1].startswith("lenet-s2 (inconsistent: history.csv")
    assert problems[2:] == ["lenet-s3 (missing: no metrics.json)"]
    with pytest.raises(report.ReportError, match=r"3 run\(s\) of runs.yaml .* lenet-s1 \(missing"):
        report.render(runs, expected=["lenet-s0", "lenet-s1", "lenet-s2", "lenet-s3"])
    (tmp_path / "lenet-s1").mkdir()
    (tmp_path / "lenet-s1" / "checkpoint.pt").write_bytes(b"")
    assert report.incomplete_runs(tmp_path, ["lenet-s1"]) == ["lenet-s1 (unfinished: no metrics.json)"]


def test_headline_speed_table_reads_the_bf16_default_against_fp32_round_by_round(tmp_path, monkeypatch):
    def record(label, precision, rounds):
        return {"model": "headline", "pipeline": "project", "precision": precision, "label": label,
                "images_per_s": sorted(rounds)[len(rounds) // 2], "settings": {}, "repeats": rounds}

    before = "fp32, torch's dropout, AdamW for-loop"
    bf16 = [record("default", "bf16", [400.0, 420.0, 410.0, 430.0]),
            record("fp32", "fp32", [250.0, 262.0, 256.0, 269.0]),  # 1.60x in every round
            record(before, "fp32", [300.0, 250.0, 290.0, 240.0])]  # 1.33-1.79x: too spread
    fp32 = [record("default", "fp32", [250.0] * 4), record("bf16", "bf16", [100.0] * 4)]
    for kind, records in (("avx512_bf16", bf16), ("avx2", fp32)):
        (tmp_path / kind).mkdir()
        (tmp_path / kind / "throughput.json").write_text(json.dumps({"meta": {}, "records": records}))
    monkeypatch.setattr(record_tables, "BENCHMARKS", tmp_path)
    rows = report.headline_speed_table(None).splitlines()[2:]
    assert len(rows) == 2 and not any("avx2 |" in row for row in rows)  # a bf16 default only
    assert rows[0] == "| avx512_bf16 | 1 | fp32 | 420 | 262 | 1.60 (1.60-1.60), 4 rounds | yes |"
    assert rows[1].startswith(f"| avx512_bf16 | 1 | {before} | 420 | 290 | 1.54 (")
    assert rows[1].endswith("), 4 rounds | not resolved |")
    # a second reading kept beside the benchmark: its rows, then each reading's speed-up as one value
    (tmp_path / "avx512_bf16" / "headline-reading-2.json").write_text(json.dumps({"records": bf16}))
    rows = report.headline_speed_table(None).splitlines()[2:]
    assert [row.split(" | ")[1:3] for row in rows] == [
        ["1", "fp32"], ["1", before], ["2", "fp32"], ["2", before], ["all 2", "fp32"], ["all 2", before]]
    assert rows[4] == "| avx512_bf16 | all 2 | fp32 |  |  | 1.60 (1.60-1.60), 2 readings | yes |"


def test_small_model_readings_take_each_reading_as_one_value(tmp_path, monkeypatch):
    (tmp_path / "avx2").mkdir()
    (tmp_path / "avx2" / "throughput.json").write_text(json.dumps(benchmark()))
    monkeypatch.setattr(record_tables, "BENCHMARKS", tmp_path)
    assert report.small_model_readings_table(None).startswith("No small model has more than one")
    # two more readings of LeNet: 3.6, 3.3 and 3.45x naive in every round; micro-batch off
    # 1.11x, 1.21x, 1.16x the default
    for k, (default, off) in enumerate([((3300.0,) * 3, (4000.0,) * 3), ((3450.0,) * 3, (4000.0,) * 3)], 2):
        payload = benchmark(default_rounds=default)
        payload["records"][2]["repeats"] = list(off)
        (tmp_path / "avx2" / f"lenet-reading-{k}.json").write_text(json.dumps(payload))
    rows = report.small_model_readings_table(None).splitlines()[2:]
    assert [row.split(" | ")[3] for row in rows] == ["1", "2", "3", "all 3"]
    assert rows[1] == ("| avx2 | lenet | benchmark | 2 | 3,300 | 3.30 (3.30-3.30) | micro-batch off | "
                       "1.21 (1.21-1.21) |  |  |")
    *_, naive, setting, faster, at_least, within, _ = rows[3].split("|")
    assert naive.strip().startswith("3.4") and setting.strip() == "micro-batch off"
    assert at_least.strip() == "yes"  # three readings at 3.30-3.45x
    assert within.strip() == "no"  # micro-batch off 1.11-1.21x faster in every reading
    # a later series (the code changed) in a subfolder: its own rows and verdict, never pooled
    # with the benchmark's; its readings in numeric order (10 after 2)
    (tmp_path / "avx2" / "new-code").mkdir()
    for k, default in ((1, 2000.0), (2, 2100.0), (10, 2050.0)):
        payload = benchmark(default_rounds=(default,) * 3)
        (tmp_path / "avx2" / "new-code" / f"lenet-reading-{k}.json").write_text(json.dumps(payload))
    rows = report.small_model_readings_table(None).splitlines()[2:]
    assert [row.split(" | ")[2:4] for row in rows[4:]] == [
        ["new-code", "1"], ["new-code", "2"], ["new-code", "10"], ["new-code", "all 3"]]
    assert rows[3].split(" | ")[8] == "yes" and rows[7].split(" | ")[8] == "no"  # 2.0-2.1x naive


def test_a_series_whose_default_was_fastest_is_read_against_the_next_fastest(tmp_path, monkeypatch):
    (tmp_path / "avx2" / "later").mkdir(parents=True)
    (tmp_path / "avx2" / "throughput.json").write_text(json.dumps(benchmark()))
    monkeypatch.setattr(record_tables, "BENCHMARKS", tmp_path)
    # the default (5,000-5,100 img/s) faster than micro-batch off (about 4,000) in every reading
    for k, default in ((1, 5000.0), (2, 5100.0), (3, 5050.0)):
        payload = benchmark(default_rounds=(default,) * 3)
        (tmp_path / "avx2" / "later" / f"lenet-reading-{k}.json").write_text(json.dumps(payload))
    rows = [row.split(" | ") for row in report.small_model_readings_table(None).splitlines()[2:]]
    assert [row[6] for row in rows] == ["micro-batch off"] * 4  # not "none"
    assert rows[0][7] == "0.80 (0.77-0.84)" and rows[3][7] == "0.80 (0.78-0.82)"
    assert rows[3][9] == "yes |"  # micro-batch off 0.80x the default: the default is within 5%

import json

import pytest
import torch
from squeezestudy import bench
from squeezestudy.cli import main


def test_benchmark_runs_end_to_end(fashion_mnist, tmp_path, capsys):
    code = main(["bench", "--models", "lenet", "--quick", "--steps", "1", "--repeats", "1",
                 "--warmup", "0", "--workers", "0", "--device", "cpu",
                 "--data-dir", str(fashion_mnist.source), "--out", str(tmp_path)])
    assert code == 0
    payload = json.loads((tmp_path / "throughput.json").read_text())
    records = payload["records"]
    assert {r["pipeline"] for r in records} == {"naive", "project"}
    assert all(r["images_per_s"] > 0 and r["fraction_of_peak"] > 0 for r in records)
    assert next(r for r in records if r["pipeline"] == "naive")["ratio_vs_naive"] == 1.0
    assert "| lenet | project | default |" in (tmp_path / "throughput.md").read_text()
    assert "x naive" in capsys.readouterr().out


def test_bursts_sized_by_time_take_the_steps_one_timed_step_says(monkeypatch):
    clock = {"now": 0.0, "calls": 0}

    def step():  # a step that takes 10 ms on a fake clock
        clock["now"] += 0.01
        clock["calls"] += 1

    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock["now"])
    rates = bench._time_steps(step, warmup=2, steps=1, repeats=3, batch_size=8,
                              device=torch.device("cpu"), burst_seconds=0.05)
    assert clock["calls"] == 2 + 1 + 3 * 5  # warm-up, the sizing step, three bursts of 5
    assert rates == pytest.approx([800.0] * 3)

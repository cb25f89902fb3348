import json

import pytest
import torch

from squeezestudy.cli import main
from squeezestudy.speed import pipelines


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


def test_interleaved_rounds_visit_every_setting_in_turn(monkeypatch):
    clock = {"now": 0.0}
    calls = []

    def make_step(name, seconds):
        def step():
            clock["now"] += seconds
            calls.append(name)
        return step

    monkeypatch.setattr(pipelines.time, "perf_counter", lambda: clock["now"])
    timed = [pipelines.Timed(make_step("a", 0.01), batch_size=8, warmup=2),
             pipelines.Timed(make_step("b", 0.02), batch_size=8, threads=1)]
    threads = torch.get_num_threads()
    rates = pipelines.interleaved_rates(timed, torch.device("cpu"), steps=1, repeats=3,
                                    burst_seconds=0.1)
    assert torch.get_num_threads() == threads  # b's one thread is restored after each burst
    # warm-up and one sizing step each, then three rounds of bursts of 0.1 s (10 and 5 steps),
    # the order rotating: a b, b a, a b
    assert calls == ["a"] * 3 + ["b"] + (["a"] * 10 + ["b"] * 5) + (["b"] * 5 + ["a"] * 10) + (
        ["a"] * 10 + ["b"] * 5)
    assert rates == [pytest.approx([800.0] * 3), pytest.approx([400.0] * 3)]

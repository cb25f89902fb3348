import json

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

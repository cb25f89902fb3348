import json

import pytest

from squeezestudy.analysis import stats
from squeezestudy.report import pairs
from squeezestudy.report import records as record_tables
from squeezestudy.report.markdown import ReportError
from tests.test_report import benchmark

LOG = """# 2026-12-06T18:10:49Z at abc: this CPU's kernels, then an AVX2 machine's
```python
            print(f"{model:18s} pair {pair + 1}: naive {n['ms']:6.2f} ms a step")
ATEN_CPU_CAPABILITY=avx2 python pairs.py lenet
```
lenet   pair 1: naive  30.00 ms a step,   0 page faults; default  10.00 ms,   0; x naive 3.00
lenet   pair 2: naive  33.00 ms a step,   0 page faults; default  10.00 ms,   0; x naive 3.30
lenet              x naive over 2 pairs: 3.15 (1.70-5.82)
# 2026-12-06T18:13:38Z the same, an AVX2 machine's kernels: ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
lenet   pair 1: naive  25.00 ms a step,   0 page faults; default  10.00 ms,   0; x naive 2.50
# 2026-12-06T18:16:44Z done
"""


def test_a_log_gives_each_kinds_pairs_and_skips_its_code(tmp_path):
    (tmp_path / "a.log").write_text(LOG)
    ratios, summaries = pairs.log_pairs(tmp_path / "a.log")
    assert ratios == {("avx512_bf16", "lenet"): [3.0, 3.3], ("avx2-on-zen4", "lenet"): [2.5]}
    assert summaries == {("avx512_bf16", "lenet"): "3.15 (1.70-5.82)"}


@pytest.mark.parametrize("name", [name for name, _ in pairs.PAIR_LOGS])
def test_the_committed_logs_pairs_give_the_summaries_their_runs_printed(name):
    # each pair read from the ms its log prints gives the interval the run computed from its own
    ratios, summaries = pairs.log_pairs(pairs.LOGS / name)
    assert summaries and summaries.keys() == ratios.keys()
    for key, ratio in ratios.items():
        assert stats.ratio_interval(ratio).text() == summaries[key], (name, key)


def test_the_table_reads_readings_and_pairs_by_series(tmp_path, monkeypatch):
    kind = tmp_path / "benchmarks" / "avx2-on-zen4"
    kind.mkdir(parents=True)
    (kind / "throughput.json").write_text(json.dumps(benchmark(default_rounds=(3300.0, 3400.0, 3500.0))))
    (kind / "new-code").mkdir()
    for k, rounds in ((1, (2000.0,) * 3), (2, (2100.0,) * 3), (3, (2050.0,) * 3)):
        payload = benchmark(default_rounds=rounds)
        (kind / "new-code" / f"lenet-reading-{k}.json").write_text(json.dumps(payload))
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "first.log").write_text(LOG)
    (logs / "later.log").write_text(LOG)
    monkeypatch.setattr(record_tables, "BENCHMARKS", tmp_path / "benchmarks")
    monkeypatch.setattr(pairs, "LOGS", logs)
    later = {("avx2-on-zen4", "lenet"): "new-code"}
    monkeypatch.setattr(pairs, "PAIR_LOGS", (("first.log", {}), ("later.log", later)))
    rows = pairs.three_x_table(None).splitlines()[2:]
    # the benchmark's one reading by its rounds (3.3-3.5x: met); its pairs from the first log's
    # AVX2 section only (2.5x, one pair: no interval, not resolved)
    assert rows[0].startswith("| avx2-on-zen4 | lenet | benchmark | 3.40 (")
    assert "over 1 reading, its rounds | " in rows[0]
    assert rows[0].endswith("| **met** in one process, **not resolved** in pairs |")
    # the later series: its three readings as three values (2.0, 2.1 and 2.05x: missed), its pair
    # from the second log
    cells = [c.strip() for c in rows[1].split("|")[1:-1]]
    assert cells[2] == "new-code" and cells[3].endswith("over 3 readings")
    assert cells[4] == "2.50, one pair" and cells[5] == "**missed** in one process, **not resolved** in pairs"
    assert len(rows) == 2  # the one-Fire SqueezeNet has no readings here: no row


def test_a_missing_pairs_log_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(pairs, "LOGS", tmp_path)
    with pytest.raises(ReportError, match="naive-pairs-2026-12-06.log is missing"):
        pairs.series_pairs()


def test_the_verdict_is_said_once_where_both_ways_agree():
    assert pairs._said("met", "met") == "**met** both ways"
    assert pairs._said("missed", "not resolved") == "**missed** in one process, **not resolved** in pairs"
    assert pairs._said("met", None) == "**met** in one process; no pairs"


def test_the_allocator_table_reproduces_its_logs_summaries():
    found = pairs.allocator_pairs(pairs.LOGS / pairs.ALLOCATOR_LOG)
    assert list(found) == ["squeezenet_fmnist", "lenet", "headline", "alexnet"]
    text = (pairs.LOGS / pairs.ALLOCATOR_LOG).read_text()
    for model, got in found.items():
        ratio = stats.ratio_interval([glibc / kept for glibc, _, kept, _ in got]).text()
        assert f"{model:18s} speed-up over {len(got)} pairs: {ratio}" in text
    rows = pairs.allocator_table(None).splitlines()
    assert rows[2] == "| squeezenet_fmnist | 4,072-4,324; 0 in 1 of 6 | 0 | 1.30 (1.10-1.53) |"


def test_page_faults_read_as_a_range_and_the_processes_without():
    assert pairs._faults([0, 0]) == "0" and pairs._faults([5, 5, 5]) == "5"
    assert pairs._faults([1200, 0, 3400, 1500]) == "1,200-3,400; 0 in 1 of 4"


def test_a_missing_allocator_log_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(pairs, "LOGS", tmp_path)
    with pytest.raises(ReportError, match="allocator-2026-12-06.log is missing"):
        pairs.allocator_table(None)

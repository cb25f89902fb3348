"""The small models against the naive pipeline, read both ways the speed page reads them: in the
benchmark (one process, over a series' readings) and process against process (fresh processes,
the pairs kept in their runs' logs). The pairs are read from those logs as they printed them:
each pair's ratio is the naive pipeline's ms a step over the default's."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from squeezestudy.analysis import stats
from squeezestudy.core.paths import OUTPUTS
from squeezestudy.report.markdown import ReportError, markdown_table
from squeezestudy.report.records import benchmark_records, reading_series
from squeezestudy.speed import readings

LOGS = OUTPUTS / "logs"
# Each log of process pairs, oldest first, and the series of readings its pairs belong to, by
# (CPU kind, model): the code they timed (a series not named is the benchmark's).
PAIR_LOGS: tuple[tuple[str, dict[tuple[str, str], str]], ...] = (
    ("naive-pairs-2026-12-06.log", {}),
    ("naive-pairs-more-2026-12-06.log", {}),
    ("naive-pairs-after-changes-2026-12-06.log", {("avx512_bf16", "lenet"): "fused-pool",
                                                  ("avx2-on-zen4", "squeezenet_fmnist"): "relu-after-pool"}),
)
PAIR = re.compile(r"^(\S+)\s+pair \d+: naive\s+([\d.]+) ms a step.*default\s+([\d.]+) ms")
SUMMARY = re.compile(r"^(\S+)\s+x naive over (\d+) pairs: (.+)$")
AVX2_SECTION = "ATEN_CPU_CAPABILITY=avx2"  # a section header of a log run with an AVX2 machine's kernels


def log_pairs(path: Path) -> tuple[dict[tuple[str, str], list[float]], dict[tuple[str, str], str]]:
    """(ratios, summaries) of a log by (CPU kind, model): each pair's naive / default ms a step, and
    the log's own summary line of them. Its sections run on this Zen 4's kernels until a header
    (a line starting with `# 20`) names the AVX2 simulation's settings."""
    kind, ratios, summaries = "avx512_bf16", {}, {}
    for line in path.read_text().splitlines():
        if line.startswith("# 20"):
            kind = "avx2-on-zen4" if AVX2_SECTION in line else "avx512_bf16"
        elif m := PAIR.match(line):
            ratios.setdefault((kind, m[1]), []).append(float(m[2]) / float(m[3]))
        elif m := SUMMARY.match(line):
            summaries[(kind, m[1])] = m[3].strip()
    return ratios, summaries


def _log(name: str) -> Path:
    """The path of a log a table reads; ReportError where it is missing."""
    path = LOGS / name
    if not path.exists():
        raise ReportError(f"{path} is missing: a table of the speed page reads it")
    return path


def series_pairs() -> dict[tuple[str, str, str], list[tuple[str, list[float]]]]:
    """(log, its ratios) of each (CPU kind, model, series), in the order of PAIR_LOGS."""
    found: dict[tuple[str, str, str], list[tuple[str, list[float]]]] = {}
    for name, series_of in PAIR_LOGS:
        for (kind, model), ratios in log_pairs(_log(name))[0].items():
            series = series_of.get((kind, model), "benchmark")
            found.setdefault((kind, model, series), []).append((name, ratios))
    return found


VERDICTS = {"yes": "met", "no": "missed", "not resolved": "not resolved"}  # readings.at_least's


def _said(one_process: str, in_pairs: str | None) -> str:
    """The 3x verdict read both ways, in words."""
    if in_pairs is None:
        return f"**{one_process}** in one process; no pairs"
    if in_pairs == one_process:
        return f"**{one_process}** both ways"
    return f"**{one_process}** in one process, **{in_pairs}** in pairs"


def three_x_table(runs: pd.DataFrame) -> str:
    """Per CPU kind, small model and series of readings: its default against the naive pipeline in
    the benchmark (over the series' readings, each reading's rounds as one value; a single reading
    by its rounds) and in process pairs (over the pairs of each log in turn, then all of them), and
    the 3x verdict each way: met where the 95% interval lies at or above 3x, missed where below."""
    pairs, rows = series_pairs(), []
    for kind, record in benchmark_records("throughput.json"):
        for model in readings.SMALL_MODELS:
            for series, found in reading_series(kind, record, model):
                taken = [next(r for r in recs if r.label == "default") for _, recs in found if recs]
                if not taken:
                    continue
                # one value a reading (its rounds' geometric mean); a single reading by its rounds
                values = (taken[0].ratio_rounds if len(taken) == 1
                          else [stats.ratio_interval(d.ratio_rounds).mean for d in taken])
                one = stats.ratio_interval(values)
                over = "1 reading, its rounds" if len(taken) == 1 else f"{len(taken)} readings"
                text, all_pairs = [], []
                for _, ratios in pairs.get((kind, model, series), []):
                    all_pairs += ratios
                    r = stats.ratio_interval(all_pairs)
                    text.append(f"{r.text()} over {len(all_pairs)}" if len(all_pairs) > 1
                                else f"{r.mean:.2f}, one pair")
                said = _said(VERDICTS[readings.at_least(values, readings.NAIVE_TARGET)],
                             VERDICTS[readings.at_least(all_pairs, readings.NAIVE_TARGET)]
                             if all_pairs else None)
                rows.append({"CPU kind": kind, "model": model, "series": series,
                             "benchmark, one process (95% interval)": f"{one.text()} over {over}",
                             "process pairs (95% interval), pairs": "; ".join(text) or "-",
                             "3x naive": said})
    return markdown_table(pd.DataFrame(rows), "llllll")


ALLOCATOR_LOG = "allocator-2026-12-06.log"  # glibc's allocator as it is against freed memory kept
ALLOCATOR_PAIR = re.compile(r"^(\S+)\s+pair \d+: glibc as it is\s+([\d.]+) ms a step,\s+(\d+) page faults"
                            r".*freed memory kept\s+([\d.]+) ms,\s+(\d+) \(kept\)")


def allocator_pairs(path: Path) -> dict[str, list[tuple[float, int, float, int]]]:
    """Per model, each pair of the allocator's log: (ms a step and page faults a step with glibc's
    allocator as it is, then the same with freed memory kept)."""
    found: dict[str, list[tuple[float, int, float, int]]] = {}
    for line in path.read_text().splitlines():
        if m := ALLOCATOR_PAIR.match(line):
            found.setdefault(m[1], []).append((float(m[2]), int(m[3]), float(m[4]), int(m[5])))
    return found


def _faults(values: list[int]) -> str:
    """`4,072-4,324; 0 in 1 of 6`: the range of the processes that faulted, and how many did not."""
    faulted = sorted(v for v in values if v)
    if not faulted:
        return "0"
    spread = f"{faulted[0]:,}" if faulted[0] == faulted[-1] else f"{faulted[0]:,}-{faulted[-1]:,}"
    zeros = len(values) - len(faulted)
    return spread + (f"; 0 in {zeros} of {len(values)}" if zeros else "")


def allocator_table(runs: pd.DataFrame) -> str:
    """The allocator setting's process pairs, per model: page faults a step each way and the
    speed-up of freed memory kept, read pair by pair (glibc's ms a step over the kept one's)."""
    rows = []
    for model, found in allocator_pairs(_log(ALLOCATOR_LOG)).items():
        ratio = stats.ratio_interval([glibc / kept for glibc, _, kept, _ in found])
        rows.append({"model": model,
                     "page faults a step, glibc as it is": _faults([f for _, f, _, _ in found]),
                     "with freed memory kept": _faults([f for *_, f in found]),
                     f"speed-up over {len(found)} pairs (95% interval)": ratio.text()})
    return markdown_table(pd.DataFrame(rows), "lrrl")

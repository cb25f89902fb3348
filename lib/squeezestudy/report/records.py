"""Tables of the recorded measurements: Deep Compression's Table 2, tuning and speed, the committed
weights."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from squeezestudy.analysis import headline, stats
from squeezestudy.analysis.headline import ALEXNET_RUNS
from squeezestudy.core.paths import OUTPUTS, WEIGHTS_DIR
from squeezestudy.report.markdown import ReportError, markdown_table, runs_matching
from squeezestudy.runs.finished import EXPORT_MAX_BYTES, keeps_weights
from squeezestudy.speed import bench, readings, tune
from squeezestudy.training import settings

DEEP_COMPRESSION_TABLE = OUTPUTS / "deep_compression" / "table2.csv"


HEADLINE_COMPRESSION_TABLE = OUTPUTS / "deep_compression" / "table2_headline.csv"


FILE_SEARCH_SOURCE = "headline-b96aug60-s0"  # the weights the second round's 500x search compressed


def sealed_search(source: str, command: str, next_stage: str | None = None
                  ) -> tuple[pd.DataFrame, pd.Series | None, str, int]:
    """A 500x search's seed-0 records (sealed) read by the plan's rule: `headline.file_search`'s
    table, choice and verdict, and AlexNet-112's file size. `command` (the grid that writes the
    records) is named when there are none."""
    from squeezestudy.compression import deep_compression

    try:
        records = deep_compression.records(OUTPUTS / "deep_compression", source, sealed=True)
    except FileNotFoundError as err:
        raise ReportError(f"{err}: run `squeezestudy deep-compression {command} {source}`") from None
    alexnet_bytes = pd.read_csv(HEADLINE_COMPRESSION_TABLE).file_bytes.iloc[0]
    stage = {"next_stage": next_stage} if next_stage else {}
    return (*headline.file_search(records, alexnet_bytes / headline.FILE_RATIO, **stage), alexnet_bytes)


def file_search_table(runs: pd.DataFrame) -> str:
    """The second round's 500x search (sealed, validation only), from its records."""
    table, _, _, alexnet_bytes = sealed_search(FILE_SEARCH_SOURCE, "500x")
    rows = [{"setting": f"{r.bits}-bit, {r.density:.0%} kept",
             "file": f"{r.file_bytes:,} bytes",
             "x smaller than AlexNet-112": f"{alexnet_bytes / r.file_bytes:.0f}x",
             "validation change, points": f"{r.val_change:+.2f}",
             "under the line": "yes" if r.under_line else "no",
             f"within {headline.MAX_FILE_VAL_DROP} points": "yes" if r.within_rule else "no",
             "test": "sealed" if pd.isna(r.test_acc) else f"{100 * r.test_acc:.2f}"}
            for r in table.sort_values(["bits", "density"], ascending=[False, False]).itertuples()]
    return markdown_table(pd.DataFrame(rows), "lrrrlll")


def layer_search_table(runs: pd.DataFrame) -> str:
    """The third 500x round on seed 0 (sealed, validation only): the five settings against the
    line and the rule, from their records."""
    table, _, _, alexnet_bytes = sealed_search(f"{headline.LAYER_SEARCH_RECIPE}-s0", "layers")
    rows = [{"setting": f"`{r.setting}-{r.bits}bit`", "kept": f"{r.density:.1%}",
             "retraining, epochs": f"{r.prune_epochs} + {r.share_epochs}",
             "file": f"{r.file_bytes:,} bytes",
             "x smaller than AlexNet-112": f"{alexnet_bytes / r.file_bytes:.0f}x",
             "validation change, points": f"{r.val_change:+.2f}",
             "under the line": "yes" if r.under_line else "no",
             f"within {headline.MAX_FILE_VAL_DROP} points": "yes" if r.within_rule else "no"}
            for r in table.sort_values("file_bytes").itertuples()]
    return markdown_table(pd.DataFrame(rows), "lrrrrrll")


def third_round() -> tuple[pd.Series | None, pd.DataFrame | None, stats.Comparison | None, str]:
    """The third 500x round's outcome: the setting chosen on seed 0 (None if none qualified), its
    three files with their test accuracy (stage D), the paired test change and the verdict."""
    recipe = headline.LAYER_SEARCH_RECIPE
    _, chosen, verdict, alexnet_bytes = sealed_search(f"{recipe}-s0", "layers",
                                                      next_stage="its seeds 1 and 2 follow (stage D)")
    if chosen is None:
        return None, None, None, verdict
    name = f"{chosen.setting}-{chosen.bits}bit"
    paths = [OUTPUTS / "deep_compression" / f"{recipe}-s{seed}-dc-{name}.json" for seed in range(3)]
    records = pd.DataFrame([json.loads(p.read_text()) for p in paths if p.is_file()])
    if len(records) < 3 or records.test_acc.isna().any():
        raise ReportError(f"stage D of {name}: {len(records)} of 3 files, test opened for "
                          f"{int(records.test_acc.notna().sum()) if len(records) else 0}; run "
                          f"`squeezestudy deep-compression layers {recipe}-sN --only {name}`, then "
                          f"`squeezestudy deep-compression unseal {name}`")
    files, change, verdict = headline.files_hold(records, alexnet_bytes / headline.FILE_RATIO)
    return chosen, files, change, verdict


def layer_files_table(runs: pd.DataFrame) -> str:
    """The third round's stage D: the chosen setting's file on each seed, its test accuracy opened
    once, and the verdict of the plan's rule."""
    chosen, files, _, verdict = third_round()
    if files is None:
        return f"Stage D was not run: {verdict}.\n"
    alexnet_bytes = pd.read_csv(HEADLINE_COMPRESSION_TABLE).file_bytes.iloc[0]
    rows = [{"file": f"`{r.name}`", "bytes": f"{r.file_bytes:,}",
             "x smaller than AlexNet-112": f"{alexnet_bytes / r.file_bytes:.0f}x",
             "test": f"{100 * r.test_acc:.2f}%", "uncompressed": f"{100 * r.uncompressed_test_acc:.2f}%",
             "change, points": f"{r.change_points:+.2f}"} for r in files.itertuples()]
    return markdown_table(pd.DataFrame(rows), "lrrrrr") + f"\nVerdict: {verdict}.\n"


def deep_compression_table(runs: pd.DataFrame, table: Path = DEEP_COMPRESSION_TABLE,
                           notebook: str = "11_deep_compression") -> str:
    """The paper's Table 2 at this scale, as notebook 11 (or 12) measured it (file sizes on disk,
    test accuracy of the models read back from the files)."""
    if not table.is_file():
        raise ReportError(f"{table} is missing; execute notebooks/{notebook}.ipynb")
    t = pd.read_csv(table)
    untrained = " (an untrained model's file: its size depends on the shapes only)"
    rows = [{"model": r.model,
             "compression": r.compression + (untrained if r.model == "AlexNet-112" else ""),
             "file size": f"{r.file_bytes / 1e3:,.1f} KB",
             "x smaller than AlexNet-112 (fp32)": f"{r.x_smaller_than_alexnet:,.0f}x",
             "test accuracy": (stats.mean_std(runs_matching(ALEXNET_RUNS, runs).test_acc) + " (seeds)"
                               if r.model == "AlexNet-112" else f"{100 * r.test_acc:.2f}"),
             "change, points": "" if pd.isna(r.change_points) else f"{r.change_points:+.2f}"}
            for r in t.itertuples()]
    return markdown_table(pd.DataFrame(rows), "llrrrr")


def headline_compression_table(runs: pd.DataFrame) -> str:
    return deep_compression_table(runs, HEADLINE_COMPRESSION_TABLE, "12_headline")


BENCHMARKS = OUTPUTS / "benchmarks"  # one folder per CPU kind measured; archive/ holds superseded runs


def benchmark_records(name: str) -> list[tuple[str, dict]]:
    """(kind, record) of each `name` (throughput.json, tuning.json) in outputs/benchmarks/<kind>/."""
    found = [(p.parent.name, json.loads(p.read_text())) for p in sorted(BENCHMARKS.glob(f"*/{name}"))
             if p.parent.name != "archive"]
    if not found:
        raise ReportError(f"no {BENCHMARKS}/<kind>/{name}; run `squeezestudy "
                          + ("bench`" if name == "throughput.json" else "tune --record ...`"))
    return found


def tuning_table(runs: pd.DataFrame) -> str:
    """`squeezestudy tune --record` per CPU kind: per model, the static default, the choice (another
    value only where it won every round twice), the speed-up over the default measured in the
    same rounds, and whether the machine was quiet enough to cache it."""
    rows = []
    for kind, record in benchmark_records("tuning.json"):
        for key, e in record["entries"].items():
            chosen = settings.Choice(**e["choice"])
            rows.append({"CPU kind": kind, "model, batch, input": key.replace(" | ", ", "),
                         "static default": settings.Choice(**e["default"]).label(),
                         "chosen": "the static default" if e["choice"] == e["default"] else chosen.label(),
                         "speed-up, same rounds": f"{e.get('speedup', 1.0):.2f}x",
                         "settings timed": sum(len(g["rates"]) for g in e["groups"])})
        for line in (x for x in record.get("lines", []) if ": not cached" in x or ": not tuned" in x):
            rows.append({"CPU kind": kind, "model, batch, input": line, "static default": "",
                         "chosen": "not cached", "speed-up, same rounds": "", "settings timed": ""})
    return (f"Medians of {tune.ROUNDS} interleaved rounds. A value replaced the current one only where "
            "every one of its rounds beat every round of the current one, and the choice beat the "
            "static default in every round of a last comparison.\n\n"
            + markdown_table(pd.DataFrame(rows), "lllllr"))


def peaks_table(runs: pd.DataFrame) -> str:
    """The GEMM peak each benchmark measured (best of several sizes, at the start and the end of its
    run) beside the CPU's theoretical peak, per precision and thread count."""
    rows = []
    for kind, record in benchmark_records("throughput.json"):
        for p in record["meta"]["peaks"]:
            rows.append({"CPU kind": kind, "precision": p["precision"], "threads": p["threads"],
                         "measured GFLOP/s": f"{p['gflops']:,.0f}", "best GEMM": p["shape"],
                         "theoretical GFLOP/s": "-" if p["theoretical_gflops"] is None
                         else f"{p['theoretical_gflops']:,.0f}",
                         "measured / theoretical": "-" if not p["theoretical_gflops"]
                         else f"{p['gflops'] / p['theoretical_gflops']:.0%}"})
    return markdown_table(pd.DataFrame(rows), "llrrlrr")


def speed_table(runs: pd.DataFrame) -> str:
    """`squeezestudy bench` per CPU kind: per model, the naive pipeline against the project's default
    (the ratio read round by round, its share of the measured and theoretical peaks, the time an
    epoch of 55,000 images takes) and the default against the fastest setting a default may be
    (batch sizes and unchecked bf16 excluded), in the same interleaved rounds."""
    rows = []
    for kind, record in benchmark_records("throughput.json"):
        records = [readings.Record(**r) for r in record["records"]]
        for verdict in readings.default_verdicts(records):
            model = [r for r in records if r.model == verdict["model"]]
            naive = next(r for r in model if r.pipeline == "naive")
            default = next(r for r in model if r.pipeline == "project" and r.label == "default")
            s = default.settings
            rows.append({
                "CPU kind": kind, "model (batch)": f"{verdict['model']} ({s['batch_size']})",
                "naive images/s": f"{naive.images_per_s:,.0f}",
                "default images/s (rounds)": f"{default.images_per_s:,.0f} "
                f"({min(default.repeats):,.0f}-{max(default.repeats):,.0f})",
                "s an epoch": f"{55_000 / default.images_per_s:,.0f}",
                "x naive (95% interval)": verdict["x_naive"],
                "% of peak: measured, theoretical": f"{100 * (default.fraction_of_peak or 0):.0f}, "
                f"{100 * (default.fraction_of_theoretical or 0):.0f}",
                "default": settings.Choice(**{k: s[k] for k in settings.SETTINGS}).label(),
                "fastest other setting": f"{verdict['best']}: {verdict['best_images_per_s']:,.0f}"
                if verdict["best"] != "default" else "none",
                "default within 5%": verdict["within_5_percent"] if verdict["within_5_percent"] == "yes"
                else f"{verdict['within_5_percent']} ({verdict['default_over_best']:.2f})",
                "at least 3x naive": verdict["at_least_3x_naive"]})
    meta = benchmark_records("throughput.json")[0][1]["meta"]
    return (f"Each figure the median of {meta['repeats']} rounds; in each round the naive pipeline "
            "and every setting ran in turn, so a ratio is read round by round.\n\n"
            + markdown_table(pd.DataFrame(rows), "llrrrlrllll"))


def _readings(kind: str, first: dict | None, model: str, series: str = ""
              ) -> list[tuple[str, list[readings.Record]]]:
    """A model's records in each reading of a kind: the benchmark's own (throughput.json, `first`),
    then any further readings kept beside it (<model>-reading-<k>.json); with `series`, the
    readings of a later series kept in that subfolder (the code changed: none is pooled with the
    benchmark's)."""
    files = sorted((BENCHMARKS / kind / series).glob(f"{model}-reading-*.json"),
                   key=lambda p: int(p.stem.rsplit("-", 1)[-1]))
    found = ([("1", first)] if first is not None else []) + [
        (p.stem.rsplit("-", 1)[-1], json.loads(p.read_text())) for p in files]
    return [(name, [readings.Record(**r) for r in payload["records"] if r["model"] == model])
            for name, payload in found]


def reading_series(kind: str, first: dict, model: str
                   ) -> list[tuple[str, list[tuple[str, list[readings.Record]]]]]:
    """(series, its readings) of a model on a kind: the benchmark's, then each subfolder's."""
    later = sorted(p.name for p in (BENCHMARKS / kind).iterdir() if p.is_dir())
    return [("benchmark", _readings(kind, first, model))] + [
        (name, _readings(kind, None, model, name)) for name in later]


def headline_speed_table(runs: pd.DataFrame) -> str:
    """`squeezestudy bench` per CPU kind where the headline network's default is bf16: per reading,
    its images/s against fp32 with the same code and against fp32 as it ran before (torch's
    dropout, AdamW's for-loop), the speed-up read round by round (geometric mean, 95% interval),
    whether it reaches readings.HEADLINE_TARGET; and, over all readings, each reading's speed-up
    as one value (a reading's rounds share its machine state, so they are not pooled)."""
    rows = []

    def row(kind, reading, label, values, default_ips, other_ips, unit="rounds"):
        ratio = stats.ratio_interval(values)
        rows.append({"CPU kind": kind, "reading": reading, "against": label,
                     "bf16 default images/s": default_ips, "its images/s": other_ips,
                     "speed-up (95% interval), n": f"{ratio.text()}, {ratio.n} {unit}",
                     f"at least {readings.HEADLINE_TARGET:g}x": readings.at_least(
                         values, readings.HEADLINE_TARGET)})

    for kind, record in benchmark_records("throughput.json"):
        means: dict[str, list[float]] = {}  # each reading's speed-up, by what it is read against
        taken = 0
        for reading, records in _readings(kind, record, bench.HEADLINE):
            default = next((r for r in records if r.label == "default" and r.precision == "bf16"), None)
            for label in readings.HEADLINE_BEFORE if default else ():
                other = next((r for r in records if r.label == label), None)
                if other is None or len(other.repeats) != len(default.repeats):
                    continue
                rounds = readings.speedup_rounds(default, other)
                means.setdefault(label, []).append(stats.ratio_interval(rounds).mean)
                row(kind, reading, label, rounds, f"{default.images_per_s:,.0f}",
                    f"{other.images_per_s:,.0f}")
            taken += default is not None
        for label, values in means.items() if taken > 1 else ():
            row(kind, f"all {taken}", label, values, "", "", unit="readings")
    return markdown_table(pd.DataFrame(rows), "lllrrll")


def small_model_readings_table(runs: pd.DataFrame) -> str:
    """The small models where a kind has more than one reading of them, by series (the
    benchmark's, then any later one kept in a subfolder after the code changed; series are not
    pooled): per reading, the default against the naive pipeline and against the fastest setting
    of the series' first reading other than the default, one a default may be (each read round by
    round); over a series' readings, each reading's geometric mean as one value with a 95%
    t-interval, and the verdicts: at least NAIVE_TARGET x naive (its low end at or above it: yes;
    its high end below: no), the default within 5% (that setting's speed-up: high end below
    1 / 0.95: yes; low end at or above it: no, as `readings.default_verdicts` reads one reading);
    otherwise not resolved."""
    rows = []
    for kind, record in benchmark_records("throughput.json"):
        for model in readings.SMALL_MODELS:
            for series, found in reading_series(kind, record, model):
                rows += _series_rows(kind, model, series, [(n, recs) for n, recs in found if recs])
    if not rows:
        return "No small model has more than one reading on any kind.\n"
    return markdown_table(pd.DataFrame(rows), "llllrlllll")


def _series_rows(kind: str, model: str, series: str, taken: list[tuple[str, list[readings.Record]]]
                 ) -> list[dict]:
    if len(taken) < 2:
        return []
    rows = []
    # the fastest setting of reading 1 a default may be, other than the default (faster or not)
    others = [r for r in readings.eligible(taken[0][1], model) if r.label != "default"]
    compared = max(others, key=lambda r: r.images_per_s).label if others else None
    naive_means, compared_means = [], []
    for name, recs in taken:
        default = next(r for r in recs if r.label == "default")
        other = next((r for r in recs if r.label == compared), None)
        x_naive = stats.ratio_interval(default.ratio_rounds)
        naive_means.append(x_naive.mean)
        over = stats.ratio_interval(readings.speedup_rounds(other, default)) if other else None
        if over:
            compared_means.append(over.mean)
        rows.append({"CPU kind": kind, "model": model, "series": series, "reading": name,
                     "default images/s": f"{default.images_per_s:,.0f}",
                     "x naive (95% interval)": x_naive.text(),
                     "fastest other setting (of reading 1)": compared if other else "none",
                     "its speed-up over the default": over.text() if over else "",
                     "at least 3x naive": "", "default within 5%": ""})
    over_all = stats.ratio_interval(compared_means) if compared_means else None
    # that setting at least 1 / 0.95 the default: the default is not within 5%
    faster = readings.at_least(compared_means, 1 / 0.95)
    within = "-" if over_all is None else {"yes": "no", "no": "yes"}.get(faster, faster)
    rows.append({"CPU kind": kind, "model": model, "series": series, "reading": f"all {len(taken)}",
                 "default images/s": "",
                 "x naive (95% interval)": stats.ratio_interval(naive_means).text(),
                 "fastest other setting (of reading 1)": compared if over_all else "none",
                 "its speed-up over the default": over_all.text() if over_all else "",
                 "at least 3x naive": readings.at_least(naive_means, readings.NAIVE_TARGET),
                 "default within 5%": within})
    return rows


def _weights_family(run: str) -> str:
    """`lenet-s1` -> `lenet-s*`; a design sweep's runs share one row (`design-sr*-s*`)."""
    return re.sub(r"^design-(sr|pct)[\d.]+$", r"design-\1*", headline.setting_name(run)) + "-s*"


def weights_table(runs: pd.DataFrame, weights_dir: str | Path = WEIGHTS_DIR) -> str:
    """Which runs a reader can load without training (weights.load_model), and what their weight
    files take in git; a run whose weights exceed train.EXPORT_MAX_BYTES has none by design."""
    rows, total_files, total_bytes = [], 0, 0
    for family, group in runs.groupby(runs.run.map(_weights_family), sort=True):
        sizes = [f.stat().st_size for f in (Path(weights_dir) / f"{r}.pt" for r in group.run) if f.is_file()]
        low, high = int(group.params.min()), int(group.params.max())
        too_big = not keeps_weights(low)
        rows.append({"runs": f"`{family}`", "parameters": f"{low:,}" if low == high else f"{low:,}-{high:,}",
                     "weight files": f"{len(sizes)} of {len(group)}"
                     + (f" (over {EXPORT_MAX_BYTES // 2**20} MiB: not kept)" if too_big else ""),
                     "bytes": f"{sum(sizes):,}"})
        total_files, total_bytes = total_files + len(sizes), total_bytes + sum(sizes)
    rows.append({"runs": "**all**", "parameters": "", "weight files": f"**{total_files} of {len(runs)}**",
                 "bytes": f"**{total_bytes:,}** ({total_bytes / 2**20:.1f} MiB)"})
    return markdown_table(pd.DataFrame(rows), "lrlr")

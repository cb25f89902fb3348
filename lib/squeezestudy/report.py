"""The result tables of README and docs/*.md, generated from `outputs/`: `squeezestudy report`
writes each between its `<!-- report:NAME -->` and `<!-- /report:NAME -->` markers, wherever they
are (once across the documents); `squeezestudy report --check` fails when a committed table
differs from what the runs give (CI runs it)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from . import bench, headline, stats, sweeps, tune
from .headline import ALEXNET_RUNS, HEADLINE_RUNS
from .paths import DEPTH_TRAIN_ACCURACY, OUTPUTS, README, RUNS_DIR, WEIGHTS_DIR, display_path
from .results import collect_runs, select
from .summary import size_mb
from .train import EXPORT_MAX_BYTES, keeps_weights

MARKER = re.compile(r"(<!-- report:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /report:(?P=name) -->)", re.S)

NOTE_MODELS = {"squeezenet_fmnist": "one-Fire SqueezeNet", "lenet": "LeNet (no padding)",
               "alexnet": "AlexNet at 112x112"}


class ReportError(ValueError):
    """The README and the runs disagree, or a marker is missing."""


def _runs(pattern: str, runs: pd.DataFrame) -> pd.DataFrame:
    chosen = select(runs, pattern)
    if chosen.empty:
        raise ReportError(f"no finished run matches {pattern!r} in {RUNS_DIR}; run the batch first")
    return chosen


def _markdown(frame: pd.DataFrame, align: str) -> str:
    """A GitHub table; `align` has one character per column: l(eft) or r(ight)."""
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"


def _trained_on(group: pd.DataFrame) -> str:
    name = group.device_name.iloc[0]
    device = "CPU" if str(name).startswith("cpu") else name
    return f"{device}, {group.precision.iloc[0]}, {group.train_time_s.mean() / 60:.1f} min a run"


def note_table(runs: pd.DataFrame) -> str:
    """The note's experiment: the three models, test accuracy over seeds."""
    from .summary import total_mult_adds
    from .train import TrainConfig, build_model

    rows = []
    for model, label in NOTE_MODELS.items():
        group = _runs(rf"{model}-s\d+", runs)
        config = TrainConfig(**group.config.iloc[0])
        macs = total_mult_adds(build_model(config), config.resolved_image_size(), in_channels=1)
        params = int(group.params.iloc[0])
        rows.append({"model": label, "parameters (note)": f"{params:,} ({params / 1e6:.2f}M)",
                     "multiply-adds": f"{macs / 1e6:.2f}M",
                     "test accuracy, mean ± std": f"**{stats.mean_std(group.test_acc)}%**",
                     "seeds": len(group), "epochs": int(group.epochs.iloc[0]),
                     "trained on": _trained_on(group)})
    return _markdown(pd.DataFrame(rows), "lrrrrrl")


def _sweep_table(runs: pd.DataFrame, pattern: str, key: str, title: str, fmt: Callable) -> str:
    group = _runs(pattern, runs)
    group = group.assign(**{key: [c["model_kwargs"][key] for c in group.config]})
    points = stats.aggregate(group, key).sort_index()
    sizes = group.groupby(key).params.first().map(size_mb)
    columns = [fmt(v) for v in points.index]
    frame = pd.DataFrame([["size, MB (fp32)", *[f"{sizes[v]:.2f}" for v in points.index]],
                          ["seeds", *[int(n) for n in points.n]],
                          ["test accuracy", *[stats.mean_std(group.loc[group[key] == v, "test_acc"])
                                              for v in points.index]]],
                         columns=[title, *columns])
    return _markdown(frame, "l" + "r" * len(columns))


def sr_table(runs: pd.DataFrame) -> str:
    return _sweep_table(runs, r"design-sr[\d.]+-s\d+", "sr", "squeeze ratio (pct3x3 0.5)", lambda v: f"{v}")


def pct_table(runs: pd.DataFrame) -> str:
    return _sweep_table(runs, r"design-(pct[\d.]+|sr0\.5)-s\d+", "pct3x3", "share of 3x3 filters (SR 0.5)",
                        lambda v: f"{v:.0%}")


DEPTH_SETUPS = {"1 Fire": r"squeezenet_fmnist-s\d+", "8 Fires": r"depth-fire8-s\d+",
                "1 Fire, augmented": r"depth-fire1-aug-s\d+", "8 Fires, augmented": r"depth-fire8-aug-s\d+"}


def depth_table(runs: pd.DataFrame) -> str:
    """Test accuracy and the train-test gap; training accuracy in eval mode from notebook 09."""
    groups = {setup: _runs(pattern, runs) for setup, pattern in DEPTH_SETUPS.items()}
    try:
        train_eval = sweeps.cached_train_accuracy([r for g in groups.values() for r in g.run],
                                                  DEPTH_TRAIN_ACCURACY, runs.attrs.get("runs_dir", RUNS_DIR))
    except FileNotFoundError as e:
        raise ReportError(f"{e} (notebooks/09_depth.ipynb)") from None
    train_eval = train_eval.set_index("run").train_eval_acc
    rows = []
    for setup, group in groups.items():
        train_acc = train_eval.loc[group.run]
        rows.append({"setup": setup, "seeds": len(group),
                     "test accuracy": stats.mean_std(group.test_acc),
                     "train accuracy (eval mode)": f"{100 * train_acc.mean():.2f}",
                     "gap, points": f"{100 * (train_acc.mean() - group.test_acc.mean()):.2f}"})
    return _markdown(pd.DataFrame(rows), "lrrrr")


def bypass_table(runs: pd.DataFrame) -> str:
    rows = []
    for kind, pattern in {"none": r"design-sr0\.125-s\d+", "simple": r"bypass-simple-s\d+",
                          "complex": r"bypass-complex-s\d+"}.items():
        group = _runs(pattern, runs)
        rows.append({"bypass (SR 0.125)": kind, "parameters": f"{int(group.params.iloc[0]):,}",
                     "seeds": len(group), "test accuracy": stats.mean_std(group.test_acc)})
    return _markdown(pd.DataFrame(rows), "lrrr")


# (label a, pattern a, label b, pattern b): every comparison the README's prose draws.
COMPARISONS = [
    ("AlexNet-112", ALEXNET_RUNS, "one-Fire SqueezeNet", r"squeezenet_fmnist-s\d+"),
    ("LeNet", r"lenet-s\d+", "one-Fire SqueezeNet", r"squeezenet_fmnist-s\d+"),
    ("AlexNet-112", ALEXNET_RUNS, "LeNet", r"lenet-s\d+"),
    ("SR 0.25", r"design-sr0\.25-s\d+", "SR 0.125", r"design-sr0\.125-s\d+"),
    ("SR 0.5", r"design-sr0\.5-s\d+", "SR 0.25", r"design-sr0\.25-s\d+"),
    ("SR 1.0", r"design-sr1\.0-s\d+", "SR 0.75", r"design-sr0\.75-s\d+"),
    ("SR 0.75", r"design-sr0\.75-s\d+", "SR 0.5", r"design-sr0\.5-s\d+"),
    ("3x3 25%", r"design-pct0\.25-s\d+", "3x3 1%", r"design-pct0\.01-s\d+"),
    ("3x3 75%", r"design-pct0\.75-s\d+", "3x3 50%", r"design-sr0\.5-s\d+"),
    ("3x3 99%", r"design-pct0\.99-s\d+", "3x3 75%", r"design-pct0\.75-s\d+"),
    ("simple bypass", r"bypass-simple-s\d+", "no bypass", r"design-sr0\.125-s\d+"),
    ("complex bypass", r"bypass-complex-s\d+", "no bypass", r"design-sr0\.125-s\d+"),
    ("complex bypass", r"bypass-complex-s\d+", "simple bypass", r"bypass-simple-s\d+"),
    ("8 Fires", r"depth-fire8-s\d+", "1 Fire", r"squeezenet_fmnist-s\d+"),
    ("1 Fire, augmented", r"depth-fire1-aug-s\d+", "1 Fire", r"squeezenet_fmnist-s\d+"),
    ("8 Fires, augmented", r"depth-fire8-aug-s\d+", "8 Fires", r"depth-fire8-s\d+"),
    ("headline, plain recipe", HEADLINE_RUNS, "AlexNet-112", ALEXNET_RUNS),
    ("headline, plain recipe", HEADLINE_RUNS, "one-Fire SqueezeNet", r"squeezenet_fmnist-s\d+"),
    ("headline, plain recipe", HEADLINE_RUNS, "LeNet", r"lenet-s\d+"),
    ("headline, regularised recipe", headline.REGULARISED_RUNS, "plain recipe", HEADLINE_RUNS),
    ("headline, regularised recipe", headline.REGULARISED_RUNS, "AlexNet-112", ALEXNET_RUNS),
    ("headline, regularised recipe", headline.REGULARISED_RUNS, "LeNet", r"lenet-s\d+"),
    ("headline, 60-epoch regularised", headline.REGULARISED_60_RUNS, "regularised recipe (30 epochs)",
     headline.REGULARISED_RUNS),
    ("headline, 60-epoch regularised", headline.REGULARISED_60_RUNS, "AlexNet-112", ALEXNET_RUNS),
    ("headline, 60-epoch regularised", headline.REGULARISED_60_RUNS, "LeNet", r"lenet-s\d+"),
    ("batch-norm variant", headline.BATCH_NORM_RUNS, "regularised recipe", headline.REGULARISED_RUNS),
    ("batch-norm variant", headline.BATCH_NORM_RUNS, "60-epoch regularised", headline.REGULARISED_60_RUNS),
]


def comparisons(runs: pd.DataFrame, pairs: list[tuple[str, str, str, str]] = COMPARISONS
                ) -> list[stats.Comparison]:
    return [stats.welch(_runs(pattern_a, runs).test_acc, _runs(pattern_b, runs).test_acc, label_a, label_b)
            for label_a, pattern_a, label_b, pattern_b in pairs]


def comparison_table(runs: pd.DataFrame, pairs: list[tuple[str, str, str, str]] = COMPARISONS) -> str:
    """Every comparison with its interval, Welch's p and Holm's adjustment over all of them: the
    reading says whether a difference stands once the number of comparisons is counted."""
    found = comparisons(runs, pairs)
    adjusted = stats.holm([c.p if c.testable else math.nan for c in found])
    rows = []
    for c, p_holm in zip(found, adjusted, strict=True):
        n = f"{c.n_a} / {c.n_b}"
        interval = f"[{100 * c.low:+.2f}, {100 * c.high:+.2f}]" if c.testable else "–"
        word = "a higher" if c.diff > 0 else "a lower"
        if not c.testable:
            reading = "untested (one seed)"
        elif c.distinguishable and p_holm < 0.05:
            reading = word
        elif c.distinguishable:
            reading = f"{word} alone, not after Holm"
        else:
            reading = "not distinguishable"
        rows.append({"a − b": f"{c.label_a} − {c.label_b}", "n (a / b)": n,
                     "difference, points": f"{100 * c.diff:+.2f}", "95% CI": interval,
                     "p (Welch)": f"{c.p:.2g}" if c.testable else "–",
                     "p (Holm)": f"{p_holm:.2g}" if c.testable else "–", "reading": reading})
    return _markdown(pd.DataFrame(rows), "lrrrrrl")


def _holm_readings(runs: pd.DataFrame) -> dict[tuple[str, str], tuple[stats.Comparison, float]]:
    """Every comparison of the table with its Holm-adjusted p, by (label a, label b)."""
    found = comparisons(runs)
    adjusted = stats.holm([c.p if c.testable else math.nan for c in found])
    return {(c.label_a, c.label_b): (c, p) for c, p in zip(found, adjusted, strict=True)}


def _said(c: stats.Comparison, p_holm: float) -> str:
    """A difference in points with its interval, worded no stronger than Holm allows."""
    text = f"{100 * c.diff:+.2f} [{100 * c.low:+.2f}, {100 * c.high:+.2f}]"
    if not c.distinguishable:
        return text + " (not distinguishable)"
    return text + (" (stands after Holm)" if p_holm < 0.05 else " (alone only, not after Holm)")


def _level_verdict(c: stats.Comparison, p_holm: float) -> str:
    """Whether a network reached a reference's accuracy, no stronger than the interval and Holm."""
    if not c.distinguishable:
        return "not distinguishable from it: neither shown reached nor shown missed"
    if c.diff > 0:
        return "reached" + ("" if p_holm < 0.05 else " (alone; not after Holm)")
    return "not reached: below it" + ("" if p_holm < 0.05 else " (alone; not after Holm)")


def claims_table(runs: pd.DataFrame) -> str:
    """The paper's claims and this study's verdicts, each with its interval (README's first screen):
    differences in test points, 95% CI (Welch), read with Holm's adjustment over all comparisons."""
    holm = _holm_readings(runs)

    def row(claim: str, evidence: str, verdict: str) -> dict:
        return {"the paper's claim": claim, "this study (Fashion-MNIST)": evidence, "verdict": verdict}

    chosen = _runs(headline.REGULARISED_60_RUNS, runs)
    alexnet = _runs(ALEXNET_RUNS, runs)
    c, p = holm[("headline, 60-epoch regularised", "AlexNet-112")]
    rows = [row("AlexNet-level accuracy with 50x fewer parameters",
                f"{int(chosen.params.iloc[0]):,} parameters "
                f"({alexnet.params.iloc[0] / chosen.params.iloc[0]:.0f}x fewer): "
                f"{stats.mean_std(chosen.test_acc)}% (n = {len(chosen)}) against AlexNet-112's "
                f"{stats.mean_std(alexnet.test_acc)}% (n = {len(alexnet)}); difference {_said(c, p)}",
                _level_verdict(c, p))]
    files = pd.read_csv(HEADLINE_COMPRESSION_TABLE)
    deep = files[files.compression.str.startswith("Deep Compression")]
    best = deep.loc[deep.file_bytes.idxmin()]
    rows.append(row("< 0.5 MB model; Deep Compression 510x smaller than AlexNet at no loss",
                    f"the same network, {best.compression[len('Deep Compression, '):]}: "
                    f"{int(best.file_bytes):,} bytes, {best.x_smaller_than_alexnet:.0f}x smaller than "
                    f"AlexNet-112's fp32 file, {best.change_points:+.2f} test points (seed 0)",
                    "< 0.5 MB reached; 500x within 0.5 points not reached"))
    sr = [holm[k] for k in (("SR 0.5", "SR 0.25"), ("SR 0.75", "SR 0.5"), ("SR 1.0", "SR 0.75"))]
    rows.append(row("accuracy rises with the squeeze ratio, plateauing at 0.75",
                    "; ".join(f"SR {a} over {b}: {_said(c, p)}" for (a, b), (c, p) in zip(
                        (("0.5", "0.25"), ("0.75", "0.5"), ("1.0", "0.75")), sr, strict=True)),
                    "rises to SR 0.5 (alone); no step above it is distinguishable"))
    pct = [holm[k] for k in (("3x3 25%", "3x3 1%"), ("3x3 75%", "3x3 50%"), ("3x3 99%", "3x3 75%"))]
    rows.append(row("a plateau at 50% 3x3 filters in the expand layers",
                    "; ".join(f"{a} over {b}: {_said(c, p)}" for (a, b), (c, p) in zip(
                        (("25%", "1%"), ("75%", "50%"), ("99%", "75%")), pct, strict=True)),
                    "consistent: the gain from 1% stands, none above 50% is distinguishable"))
    simple, p_s = holm[("simple bypass", "no bypass")]
    complex_, p_c = holm[("complex bypass", "no bypass")]
    rows.append(row("simple bypass improves accuracy (more than complex bypass)",
                    f"simple over none: {_said(simple, p_s)}; complex over none: {_said(complex_, p_c)}",
                    "complex bypass helps; simple bypass not shown to"))
    return _markdown(pd.DataFrame(rows), "lll")


SEARCH_BASE = "headline-b96aug60-s0"  # the first round's chosen recipe, seed 0 (the plan's baseline)
SEARCH_RUNS = r"headline2-.+"
HELPS_POINTS = 0.2  # the plan's rule: a change helps when seed 0 gains this much validation


def search_table(runs: pd.DataFrame) -> str:
    """The second headline round's finished runs (docs/headline-search.md), on validation only:
    each against the base recipe's seed 0 by the plan's rule. Sealed runs have no test number."""
    first = runs[runs.run == SEARCH_BASE].iloc[0]
    base = first.val_acc
    found = select(runs, SEARCH_RUNS)  # none yet is no error: the plan came first
    rows = [{"run": f"`{SEARCH_BASE}` (base)", "parameters": f"{int(first.params):,}",
             "epochs": int(first.epochs), "validation": f"{100 * base:.2f}", "against base, points": "",
             "helps (≥ +0.2)": "", "test": "known (first round)"}]
    for r in found.sort_values("run").itertuples():
        gain = 100 * (r.val_acc - base)
        rows.append({"run": f"`{r.run}`", "parameters": f"{int(r.params):,}", "epochs": int(r.epochs),
                     "validation": f"{100 * r.val_acc:.2f}", "against base, points": f"{gain:+.2f}",
                     "helps (≥ +0.2)": "yes" if gain >= HELPS_POINTS else "no",
                     "test": "sealed" if pd.isna(r.test_acc) else f"{100 * r.test_acc:.2f} (unsealed)"})
    return _markdown(pd.DataFrame(rows), "lrrrrll")


DEEP_COMPRESSION_TABLE = OUTPUTS / "deep_compression" / "table2.csv"
HEADLINE_COMPRESSION_TABLE = OUTPUTS / "deep_compression" / "table2_headline.csv"


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
             "test accuracy": (stats.mean_std(_runs(ALEXNET_RUNS, runs).test_acc) + " (seeds)"
                               if r.model == "AlexNet-112" else f"{100 * r.test_acc:.2f}"),
             "change, points": "" if pd.isna(r.change_points) else f"{r.change_points:+.2f}"}
            for r in t.itertuples()]
    return _markdown(pd.DataFrame(rows), "llrrrr")


def headline_compression_table(runs: pd.DataFrame) -> str:
    return deep_compression_table(runs, HEADLINE_COMPRESSION_TABLE, "12_headline")


# Rows of the headline table that appear once trained: the later recipes on the same network, and
# the labelled variant outside the paper's family.
HEADLINE_VARIANTS = {
    **{pattern: f"same network, {recipe} recipe" for pattern, recipe in headline.RECIPES.items()
       if pattern != HEADLINE_RUNS},
    headline.BATCH_NORM_RUNS: "same network + batch norm after each squeeze (outside the paper's family)",
}


def headline_table(runs: pd.DataFrame) -> str:
    """The headline SqueezeNet against AlexNet-112 and the targets, with the study's nearest models."""
    alexnet = _runs(ALEXNET_RUNS, runs)
    budget = headline.parameter_budget(int(alexnet.params.iloc[0]))
    rows = []
    variants = [(label, pattern) for pattern, label in HEADLINE_VARIANTS.items()
                if not select(runs, pattern).empty]  # each shows once a seed of it has finished
    plain = "headline SqueezeNet (8 Fires, 96-wide, simple bypass), plain recipe"
    for label, pattern in ((plain, HEADLINE_RUNS),
                           *variants,
                           ("AlexNet-112", ALEXNET_RUNS),
                           ("eight-Fire SqueezeNet at v1.0's widths (notebook 09)", r"depth-fire8-s\d+"),
                           ("one-Fire SqueezeNet (the note)", r"squeezenet_fmnist-s\d+")):
        group = _runs(pattern, runs)
        params = int(group.params.iloc[0])
        mean = group.test_acc.mean()
        rows.append({"model": label, "parameters": f"{params:,}",
                     "within 1/50 of AlexNet-112": "yes" if params <= budget else "no",
                     "seeds": len(group), "test accuracy": f"**{stats.mean_std(group.test_acc)}**",
                     f"mean ≥ {100 * headline.TARGET_ACC:.1f}%": "yes" if mean >= headline.TARGET_ACC
                     else "no",
                     "trained on": _trained_on(group)})
    return _markdown(pd.DataFrame(rows), "lrlrrll")


TUNING_RECORD = OUTPUTS / "benchmarks" / "tuning.json"
THROUGHPUT_RECORD = OUTPUTS / "benchmarks" / "throughput.json"


def _read_record(path: Path, command: str) -> dict:
    if not path.is_file():
        raise ReportError(f"{path} is missing; run `{command}`")
    return json.loads(path.read_text())


def tuning_table(runs: pd.DataFrame) -> str:
    """`squeezestudy tune --record` on the study's machine: per model, the static default, the
    choice the pass made (another value only where every round of it beat every round of the
    current one), and the largest gain another value showed over the current one in the rounds
    they shared (medians)."""
    record = _read_record(TUNING_RECORD, f"squeezestudy tune --record {TUNING_RECORD}")
    rows = []
    for key, e in record["entries"].items():
        best_gain, best_label = 0.0, ""
        for group in e["groups"]:
            rates = {tune.Choice(**{k: r[k] for k in e["choice"]}): r["images_per_s"] for r in group["rates"]}
            current = tune.Choice(**group["current"])
            for choice, rate in rates.items():
                if choice != current and rate / rates[current] > best_gain:
                    best_gain, best_label = rate / rates[current], f"{group['axis']}: {choice.label()}"
        rows.append({"model, batch, input": key.replace(" | ", ", "),
                     "static default": tune.Choice(**e["default"]).label(),
                     "chosen": "the static default" if e["choice"] == e["default"]
                     else tune.Choice(**e["choice"]).label(),
                     "best other value, against the current one in the same rounds":
                     f"{best_label} ({best_gain:.2f}x)" if best_label else "none timed",
                     "settings timed": sum(len(g["rates"]) for g in e["groups"])})
    return (f"Measured on `{record['machine']}`; medians of {tune.ROUNDS} interleaved rounds. A value "
            "replaced the current one only where every one of its rounds beat every round of the "
            "current one.\n\n" + _markdown(pd.DataFrame(rows), "llllr"))


def speed_table(runs: pd.DataFrame) -> str:
    """`squeezestudy bench` on the study's machine: per model, the naive pipeline against the
    project's default (the ratio, the share of the fp32 matrix-product peak), and the default
    against the fastest setting tried in the same interleaved rounds (batch-size rows excluded:
    they change the recipe)."""
    record = _read_record(THROUGHPUT_RECORD, "squeezestudy bench --out outputs/benchmarks")
    meta, records = record["meta"], record["records"]
    rows = []
    # the verdicts from the recorded rounds, by the benchmark's own rule
    for verdict in bench.default_verdicts([bench.Record(**r) for r in records]):
        model = [r for r in records if r["model"] == verdict["model"]]
        naive = next(r for r in model if r["pipeline"] == "naive")
        default = next(r for r in model if r["pipeline"] == "project" and r["label"] == "default")
        s = default["settings"]
        rows.append({"model (batch)": f"{verdict['model']} ({s['batch_size']})",
                     "naive images/s": f"{naive['images_per_s']:,.0f}",
                     "default images/s": f"{default['images_per_s']:,.0f}",
                     "its rounds": f"{min(default['repeats']):,.0f}-{max(default['repeats']):,.0f}",
                     "x naive": f"{default['ratio_vs_naive']:.2f}",
                     "% of fp32 peak": f"{100 * default['fraction_of_peak']:.0f}",
                     "default": tune.Choice(**{k: s[k] for k in tune.SETTINGS}).label(),
                     "fastest other setting": f"{verdict['best']}: {verdict['best_images_per_s']:,.0f}"
                     if verdict["best"] != "default" else "none",
                     "default within 5%": verdict["within_5_percent"] if verdict["within_5_percent"] == "yes"
                     else f"{verdict['within_5_percent']} ({verdict['default_over_best']:.2f})"})
    return (f"Measured on `{meta.get('machine', meta['device_name'])}`; fp32 matrix-product peak "
            f"{meta['peak_gflops']['fp32']:,.0f} GFLOP/s in the same run; each figure the median "
            f"of {meta['repeats']} rounds.\n\n" + _markdown(pd.DataFrame(rows), "lrrrrrlll"))


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
    return _markdown(pd.DataFrame(rows), "lrlr")


TABLES: dict[str, Callable[[pd.DataFrame], str]] = {
    "claims": claims_table, "note": note_table, "sr": sr_table, "pct": pct_table, "bypass": bypass_table,
    "depth": depth_table, "comparisons": comparison_table, "deep_compression": deep_compression_table,
    "headline": headline_table, "headline_compression": headline_compression_table,
    "tuning": tuning_table, "speed": speed_table, "weights": weights_table, "search": search_table,
}


def render(runs_dir: str | Path = RUNS_DIR) -> dict[str, str]:
    runs = collect_runs(runs_dir)
    return {name: make(runs) for name, make in TABLES.items()}


def documents() -> list[Path]:
    """Where the generated tables live: README and every page under docs/."""
    return [README, *sorted((README.parent / "docs").glob("*.md"))]


def update_all(texts: dict[str, str], tables: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Each document's text with its marked tables replaced; and the names whose text changed.
    Every table appears exactly once across the documents."""
    where: dict[str, str] = {}
    changed: list[str] = []

    def replace(document: str, match: re.Match) -> str:
        name = match["name"]
        if name not in tables:
            raise ReportError(f"{document} has a report marker {name!r} that no table fills; "
                              f"known tables: {', '.join(tables)}")
        if name in where:
            raise ReportError(f"the table {name!r} is marked twice, in {where[name]} and {document}; "
                              "keep one (link to it from the other)")
        where[name] = document
        if match["body"] != tables[name]:
            changed.append(name)
        return match[1] + tables[name] + match[4]

    out = {doc: MARKER.sub(lambda m, d=doc: replace(d, m), text) for doc, text in texts.items()}
    missing = sorted(set(tables) - set(where))
    if missing:
        verb = "lacks" if len(texts) == 1 else "together lack"
        raise ReportError(f"{', '.join(texts) or 'the documents'} {verb} the markers of "
                          f"{', '.join(missing)}: "
                          "add " + " ".join(f"<!-- report:{m} --> <!-- /report:{m} -->" for m in missing))
    return out, changed


def update(readme: str, tables: dict[str, str]) -> tuple[str, list[str]]:
    """One document's text with every marked table replaced; and the names whose text changed."""
    out, changed = update_all({"README": readme}, tables)
    return out["README"], changed


def main(docs: str | Path | list[str | Path] | None = None, check: bool = False,
         runs_dir: str | Path = RUNS_DIR) -> int:
    """Write (or with `check`, compare) every generated table in README and docs/*.md."""
    paths = documents() if docs is None else [Path(d) for d in (docs if isinstance(docs, list) else [docs])]
    texts = {str(p): p.read_text() for p in paths}
    new, changed = update_all(texts, render(runs_dir))
    shown = ", ".join(display_path(p) for p in paths)
    if check:
        if changed:
            print(f"{shown}: tables out of date with {runs_dir}: {', '.join(changed)}; "
                  "run `squeezestudy report` and commit the documents")
            return 1
        print(f"{shown}: all {len(TABLES)} tables match the runs")
        return 0
    from . import fileio

    for path in paths:
        if new[str(path)] != texts[str(path)]:
            fileio.write_text(path, new[str(path)])
    print(f"{shown}: {len(changed)} of {len(TABLES)} tables updated" + (f" ({', '.join(changed)})"
                                                                       if changed else ""))
    return 0

"""Tables of the findings: every comparison with its interval and Holm-adjusted p, the paper's claims and
this study's verdicts, the headline network's search and its results."""

from __future__ import annotations

import math

import pandas as pd

from squeezestudy.analysis import headline, stats
from squeezestudy.analysis.headline import ALEXNET_RUNS, HEADLINE_RUNS
from squeezestudy.analysis.results import select
from squeezestudy.report.markdown import markdown_table, runs_matching, trained_on
from squeezestudy.report.records import HEADLINE_COMPRESSION_TABLE, third_round

SECOND = "headline, second round (120 epochs, test sealed until frozen)"
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
    (SECOND, headline.SECOND_ROUND_RUNS, "AlexNet-112", ALEXNET_RUNS),
    (SECOND, headline.SECOND_ROUND_RUNS, "60-epoch regularised", headline.REGULARISED_60_RUNS),
]


def comparisons(runs: pd.DataFrame, pairs: list[tuple[str, str, str, str]] = COMPARISONS
                ) -> list[stats.Comparison]:
    return [stats.welch(runs_matching(pattern_a, runs).test_acc, runs_matching(pattern_b, runs).test_acc,
                        label_a, label_b)
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
    return markdown_table(pd.DataFrame(rows), "lrrrrrl")


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


def _compression_row(row) -> dict:
    """The size claim: the third 500x round's three files where a setting qualified, else the
    first round's smallest file."""
    alexnet_bytes = pd.read_csv(HEADLINE_COMPRESSION_TABLE).file_bytes.iloc[0]
    claim = "< 0.5 MB model; Deep Compression 510x smaller than AlexNet at no loss"
    chosen, files, change, verdict = third_round()
    if files is None:
        files = pd.read_csv(HEADLINE_COMPRESSION_TABLE)
        deep = files[files.compression.str.startswith("Deep Compression")]
        best = deep.loc[deep.file_bytes.idxmin()]
        return row(claim, f"the same network, {best.compression[len('Deep Compression, '):]}: "
                          f"{int(best.file_bytes):,} bytes, {best.x_smaller_than_alexnet:.0f}x smaller than "
                          f"AlexNet-112's fp32 file, {best.change_points:+.2f} test points (seed 0)",
                   "< 0.5 MB reached; 500x within 0.5 points not reached")
    how = ("each layer pruned to its own share (sensitivity scan)" if chosen.setting.startswith("layers")
           else "one share for every layer")
    steps = f" in {int(chosen.prune_steps)} steps" if chosen.get("prune_steps", 1) > 1 else ""
    holds = verdict.endswith("holds")
    times = math.floor(alexnet_bytes / files.file_bytes.max())  # the largest file's, rounded down
    return row(claim, f"the same network, {int(chosen.bits)}-bit, {how}{steps}, the test split sealed until "
                      f"the setting was chosen: {files.file_bytes.min():,}-{files.file_bytes.max():,} bytes "
                      f"(n = {len(files)}), at least {times}x smaller "
                      f"than AlexNet-112's fp32 file; test change {100 * change.diff:+.2f} "
                      f"[{100 * change.low:+.2f}, {100 * change.high:+.2f}]",
               "< 0.5 MB reached; " + ("500x within 0.5 points holds" if holds else
                                       "500x within 0.5 points not shown" if "not shown" in verdict
                                       else "500x does not hold"))


def claims_table(runs: pd.DataFrame) -> str:
    """The paper's claims and this study's verdicts, each with its interval (README's first screen):
    differences in test points, 95% CI (Welch), read with Holm's adjustment over all comparisons."""
    holm = _holm_readings(runs)

    def row(claim: str, evidence: str, verdict: str) -> dict:
        return {"the paper's claim": claim, "this study (Fashion-MNIST)": evidence, "verdict": verdict}

    chosen = runs_matching(headline.SECOND_ROUND_RUNS, runs)
    alexnet = runs_matching(ALEXNET_RUNS, runs)
    c, p = holm[(SECOND, "AlexNet-112")]
    rows = [row("AlexNet-level accuracy with 50x fewer parameters",
                f"{int(chosen.params.iloc[0]):,} parameters "
                f"({alexnet.params.iloc[0] / chosen.params.iloc[0]:.0f}x fewer), 120 epochs, the test "
                f"split sealed until the recipe was frozen: {stats.mean_std(chosen.test_acc)}% "
                f"(n = {len(chosen)}) against AlexNet-112's {stats.mean_std(alexnet.test_acc)}% "
                f"(n = {len(alexnet)}); difference {_said(c, p)}",
                _level_verdict(c, p))]
    rows.append(_compression_row(row))
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
    return markdown_table(pd.DataFrame(rows), "lll")


SEARCH_BASE = "headline-b96aug60-s0"  # the first round's chosen recipe, seed 0 (the plan's baseline)


# the search's runs; headline2-bf16-s0 and headline2-fast-s0 check bf16 and the faster pipeline
# (issue 26) and are no candidates
SEARCH_RUNS = r"headline2-(?!bf16-|fast-).+"


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
        candidate = r.run.endswith("-s0")  # the rule reads seed 0; seeds 1-2 are the chosen recipe's
        rows.append({"run": f"`{r.run}`", "parameters": f"{int(r.params):,}", "epochs": int(r.epochs),
                     "validation": f"{100 * r.val_acc:.2f}",
                     "against base, points": f"{gain:+.2f}" if candidate else "",
                     "helps (≥ +0.2)": ("yes" if gain >= HELPS_POINTS else "no") if candidate
                     else "(a seed of the chosen recipe)",
                     "test": "sealed" if pd.isna(r.test_acc) else f"{100 * r.test_acc:.2f} (unsealed)"})
    return markdown_table(pd.DataFrame(rows), "lrrrrll")


# Rows of the headline table that appear once trained: the later recipes on the same network, and
# the labelled variant outside the paper's family.
HEADLINE_VARIANTS = {
    **{pattern: f"same network, {recipe} recipe" for pattern, recipe in headline.RECIPES.items()
       if pattern != HEADLINE_RUNS},
    headline.BATCH_NORM_RUNS: "same network + batch norm after each squeeze (outside the paper's family)",
    headline.SECOND_ROUND_RUNS: "same network, second round: 120 epochs, test sealed until frozen",
}


def headline_table(runs: pd.DataFrame) -> str:
    """The headline SqueezeNet against AlexNet-112 and the targets, with the study's nearest models."""
    alexnet = runs_matching(ALEXNET_RUNS, runs)
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
        group = runs_matching(pattern, runs)
        params = int(group.params.iloc[0])
        mean = group.test_acc.mean()
        rows.append({"model": label, "parameters": f"{params:,}",
                     "within 1/50 of AlexNet-112": "yes" if params <= budget else "no",
                     "seeds": len(group), "test accuracy": f"**{stats.mean_std(group.test_acc)}**",
                     f"mean ≥ {100 * headline.TARGET_ACC:.1f}%": "yes" if mean >= headline.TARGET_ACC
                     else "no",
                     "trained on": trained_on(group)})
    return markdown_table(pd.DataFrame(rows), "lrlrrll")

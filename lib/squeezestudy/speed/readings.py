"""What a benchmark run recorded, and how it is read: `Record` (one pipeline at one setting, its
rounds), ratios with the interval their rounds support, the verdicts against the speed issue's
targets (the default within 5% of the fastest setting, the small models at 3x the naive
pipeline, the headline network's bf16 default at 1.5x its fp32 default) and the Markdown table
of a run. `bench` measures; this module only reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from squeezestudy.analysis import stats

# A ratio is resolved when the 95% interval of its rounds lies within this share of their
# geometric mean, either way.
RATIO_SPREAD = 0.10
SMALL_MODELS = ("squeezenet_fmnist", "lenet")  # the models the 3x-naive target is for
NAIVE_TARGET = 3.0
# The headline network's default on a CPU with native bf16 against its fp32 default before bf16
# was checked for it and before models.dropout: the speed issue's target.
HEADLINE_TARGET = 3 / 2
STOCK = "torch's dropout, AdamW for-loop"  # the label of Setting(stock=True)
TORCH_OPS = "torch's operations"  # the label of Setting(kernels=False): no compiled kernels
HEADLINE_BEFORE = ("fp32", f"fp32, {STOCK}")  # labels of the settings it is read against


@dataclass(kw_only=True)
class Record:
    model: str
    pipeline: str  # naive | project
    precision: str
    settings: dict
    images_per_s: float
    ratio_vs_naive: float | None = None
    fraction_of_peak: float | None = None  # of the GEMM peak measured in the same run
    train_gflop_per_image: float = 0.0
    repeats: list[float] = field(default_factory=list)
    label: str = ""
    ratio_rounds: list[float] = field(default_factory=list)  # project / naive, round by round
    fraction_of_theoretical: float | None = None

    @property
    def gflops(self) -> float:
        return self.train_gflop_per_image * self.images_per_s

    def ratio_text(self) -> str:
        """The ratio to the naive pipeline: the geometric mean of its rounds with their 95%
        interval, or "not resolved" with the interval where the rounds do not pin it down."""
        if self.pipeline == "naive":
            return "1"
        if not self.ratio_rounds:  # a record from before the rounds were paired
            return "-" if self.ratio_vs_naive is None else f"{self.ratio_vs_naive:.2f} (one figure)"
        if len(self.ratio_rounds) == 1:
            return f"not resolved ({self.ratio_rounds[0]:.2f}, one round)"
        ratio = stats.ratio_interval(self.ratio_rounds)
        if ratio_resolved(self.ratio_rounds):
            return ratio.text()
        return f"not resolved ({ratio.low:.2f}-{ratio.high:.2f})"


def ratio_resolved(rounds: list[float]) -> bool:
    """Round-by-round ratios that pin their mean down: more than one, and the 95% interval of
    their geometric mean within RATIO_SPREAD of it either way. (More rounds narrow an interval;
    the rounds' own range only widens with them.)"""
    if len(rounds) < 2:
        return False
    ratio = stats.ratio_interval(rounds)
    return (1 - RATIO_SPREAD) * ratio.mean <= ratio.low and ratio.high <= (1 + RATIO_SPREAD) * ratio.mean


def at_least(rounds: list[float], target: float) -> str:
    """Whether round-by-round ratios reach `target`: "yes" where the 95% interval of their
    geometric mean (stats.ratio_interval) lies at or above it, "no" where it lies below, otherwise
    "not resolved" (always, for a single round); "-" without rounds."""
    if not rounds:
        return "-"
    ratio = stats.ratio_interval(rounds)
    return "yes" if ratio.low >= target else "no" if ratio.high < target else "not resolved"


def speedup_rounds(fast: Record, slow: Record) -> list[float]:
    """`fast` over `slow`, round by round: both timed in the same interleaved rounds."""
    return [f / s for f, s in zip(fast.repeats, slow.repeats, strict=True)]


def eligible(records: list[Record], model: str) -> list[Record]:
    """The project's settings of `model` a default may be: batch sizes change the recipe, and bf16
    is allowed only where its accuracy was checked."""
    return [r for r in records if r.model == model and r.pipeline == "project"
            and not r.label.startswith("batch ") and "not checked" not in r.label]


def default_verdicts(records: list[Record]) -> list[dict]:
    """Per model: the default setting against the fastest setting tried that a default may be
    (batch sizes change the recipe, bf16 is allowed only where its accuracy was checked). The
    target: the default within 5% of it. "yes": its median is; "no": the 95% interval of the
    best's speed-up over the default, round by round, lies above 1 / 0.95 (`at_least`); otherwise
    "not resolved": the rounds are too spread to tell. And the default against the naive
    pipeline: at least NAIVE_TARGET x by the same interval ("yes"), below it ("no"), or "not
    resolved"."""
    verdicts = []
    for model in dict.fromkeys(r.model for r in records):
        tried = eligible(records, model)
        default = next(r for r in tried if r.label == "default")
        best = max(tried, key=lambda r: r.images_per_s)
        paired = len(best.repeats) == len(default.repeats) > 1
        if default.images_per_s >= 0.95 * best.images_per_s:
            verdict = "yes"
        elif paired and at_least(speedup_rounds(best, default), 1 / 0.95) == "yes":
            verdict = "no"
        else:
            verdict = "not resolved"
        rounds = default.ratio_rounds or ([default.ratio_vs_naive] if default.ratio_vs_naive else [])
        naive_verdict = at_least(rounds, NAIVE_TARGET) if model in SMALL_MODELS else "(no target)"
        verdicts.append({"model": model, "default_images_per_s": default.images_per_s,
                         "best": best.label, "best_images_per_s": best.images_per_s,
                         "default_over_best": default.images_per_s / best.images_per_s,
                         "within_5_percent": verdict, "x_naive": default.ratio_text(),
                         "at_least_3x_naive": naive_verdict})
    return verdicts


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}"


def line(r: Record) -> str:
    return (f"{r.model:18s} {r.pipeline:8s} {r.label:32s} {r.images_per_s:10,.0f} img/s  "
            f"x naive {r.ratio_text()}")


def markdown(records: list[Record], meta: dict) -> str:
    lines = [f"# Training throughput: {meta['device_name']}", "",
             f"Training throughput on {meta['cpu']} ({meta['device']}), torch {meta['torch']}; "
             f"load average {meta['load_before']:.1f} before the run, {meta['load_after']:.1f} after. "
             + (f"Kernels held to a lesser instruction set: "
                f"{', '.join(f'{k}={v}' for k, v in meta['forced_kernels'].items())}. "
                if meta.get("forced_kernels") else "") +
             f"Each figure is the median of {meta['repeats']} rounds; in each round the naive "
             "pipeline and every setting ran in turn.", "",
             "## Peaks", "",
             "| precision | threads | measured GFLOP/s (best GEMM) | theoretical GFLOP/s | how |",
             "|---|---:|---:|---:|---|"]
    for p in meta["peaks"]:
        theory = "-" if p["theoretical_gflops"] is None else f"{p['theoretical_gflops']:,.0f}"
        lines.append(f"| {p['precision']} | {p['threads']} | {p['gflops']:,.0f} ({p['shape']}) | "
                     f"{theory} | {p['theoretical'] or ''} |")
    lines += ["", "## Every setting", "",
              "| model | pipeline | setting | precision | batch | threads | images/s | rounds "
              "| x naive (95% interval) | % of measured peak | % of theoretical |",
              "|---|---|---|---|---:|---:|---:|---:|---|---:|---:|"]
    for r in records:
        lines.append(f"| {r.model} | {r.pipeline} | {r.label} | {r.precision} | "
                     f"{r.settings['batch_size']} | {r.settings['threads']} | {r.images_per_s:,.0f} | "
                     f"{min(r.repeats):,.0f}-{max(r.repeats):,.0f} | {r.ratio_text()} | "
                     f"{_percent(r.fraction_of_peak)} | {_percent(r.fraction_of_theoretical)} |")
    lines += ["", "## Defaults", "",
              "| model | default images/s | fastest setting a default may be | its images/s "
              "| default / fastest | default within 5% | default x naive | at least 3x naive |",
              "|---|---:|---|---:|---:|---|---|---|"]
    for v in default_verdicts(records):
        lines.append(f"| {v['model']} | {v['default_images_per_s']:,.0f} | {v['best']} | "
                     f"{v['best_images_per_s']:,.0f} | {v['default_over_best']:.2f} | "
                     f"{v['within_5_percent']} | {v['x_naive']} | {v['at_least_3x_naive']} |")
    return "\n".join(lines) + "\n"

"""Statistics for every comparison the study draws: per-group mean ± sample std over seeds, and
Welch's t-test with a 95% interval of the difference. Wording follows the interval: a difference
whose interval spans zero is "not distinguishable", never a ranking."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as st

CONFIDENCE = 0.95


def aggregate(runs: pd.DataFrame, by: str | Sequence[str], value: str = "test_acc") -> pd.DataFrame:
    """One row per group of `by`: n (seeds), mean, sample std (ddof 1; NaN for one seed) and the
    standard error of the mean of `value`. Groups keep their first-seen order."""
    keys = [by] if isinstance(by, str) else list(by)
    grouped = runs.groupby(keys, sort=False)[value]
    table = pd.DataFrame({"n": grouped.count(), "mean": grouped.mean(), "std": grouped.std(ddof=1)})
    table["sem"] = table["std"] / np.sqrt(table["n"])
    return table


@dataclass(frozen=True)
class Comparison:
    """Welch's comparison of a against b (difference = mean a - mean b)."""

    label_a: str
    label_b: str
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    std_a: float
    std_b: float
    diff: float
    low: float  # the 95% interval of the difference; NaN when a group has one value
    high: float
    p: float

    @property
    def testable(self) -> bool:
        return not math.isnan(self.low)

    @property
    def distinguishable(self) -> bool:
        return self.testable and (self.low > 0 or self.high < 0)

    def verdict(self, scale: float = 100.0, unit: str = "points") -> str:
        """One sentence whose strength follows the interval."""
        d = self.diff * scale
        n = f"n = {self.n_a}" if self.n_a == self.n_b else f"n = {self.n_a} vs {self.n_b}"
        if not self.testable:
            return (f"{self.label_a} − {self.label_b} = {d:+.2f} {unit}, untested: "
                    f"{n} leaves no seed spread for one side")
        interval = f"95% CI [{self.low * scale:+.2f}, {self.high * scale:+.2f}], p = {self.p:.2g}"
        if self.label_b == "0":  # paired differences against zero
            reading = "distinguishable" if self.distinguishable else "not distinguishable"
            return f"{self.label_a}: mean {d:+.2f} {unit}, {reading} from zero at {n} ({interval})"
        if not self.distinguishable:
            return (f"{self.label_a} and {self.label_b}: not distinguishable at {n} "
                    f"(difference {d:+.2f} {unit}, {interval})")
        word = "higher" if d > 0 else "lower"
        return f"{self.label_a} is {abs(d):.2f} {unit} {word} than {self.label_b} ({n}, {interval})"


def welch(a: Sequence[float], b: Sequence[float], label_a: str = "a", label_b: str = "b") -> Comparison:
    """Welch's t-test of mean(a) against mean(b), with the 95% interval of the difference
    (Welch-Satterthwaite degrees of freedom). With a single value on either side there is no
    spread to test against: the interval and p are NaN."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) == 0 or len(b) == 0:
        raise ValueError(f"cannot compare {label_a!r} and {label_b!r}: one of them has no values")
    std = [float(v.std(ddof=1)) if len(v) > 1 else math.nan for v in (a, b)]
    return welch_from_stats(float(a.mean()), std[0], len(a), float(b.mean()), std[1], len(b),
                            label_a, label_b)


def _t_interval(diff: float, se: float, df: float) -> tuple[float, float, float]:
    """(low, high) of the 95% interval of `diff` with standard error `se` on `df` degrees of
    freedom, and the two-sided p of diff = 0. No spread: the interval is the point itself."""
    if se == 0:
        return diff, diff, 1.0 if diff == 0 else 0.0
    half = float(st.t.ppf(0.5 + CONFIDENCE / 2, df)) * se
    return diff - half, diff + half, float(2 * st.t.sf(abs(diff) / se, df))


def welch_from_stats(mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int,
                     label_a: str = "a", label_b: str = "b") -> Comparison:
    """`welch` from each side's mean, sample std and n (a table of sweep points, say)."""
    diff = mean_a - mean_b
    low = high = p = math.nan
    if n_a > 1 and n_b > 1:
        va, vb = std_a**2 / n_a, std_b**2 / n_b
        df = (va + vb) ** 2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1)) if va + vb > 0 else math.inf
        low, high, p = _t_interval(diff, math.sqrt(va + vb), df)
    return Comparison(label_a, label_b, int(n_a), int(n_b), float(mean_a), float(mean_b),
                      float(std_a), float(std_b), float(diff), float(low), float(high), float(p))


def mean_std(values: Sequence[float], scale: float = 100.0, digits: int = 2) -> str:
    """`90.95 ± 0.38`, or the mean alone for a single value."""
    values = np.asarray(values, dtype=float) * scale
    if len(values) < 2:
        return f"{values.mean():.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def paired(differences: Sequence[float], label: str = "difference") -> Comparison:
    """A one-sample t-test of paired differences against zero (same recipe and seed, two
    settings): the 95% interval of the mean difference. Reported as `label` − 0."""
    d = np.asarray(differences, dtype=float)
    if len(d) == 0:
        raise ValueError(f"no paired differences for {label!r}")
    std = float(d.std(ddof=1)) if len(d) > 1 else math.nan
    low = high = p = math.nan
    if len(d) > 1:
        low, high, p = _t_interval(float(d.mean()), std / math.sqrt(len(d)), len(d) - 1)
    return Comparison(label, "0", len(d), len(d), float(d.mean()), 0.0, std, 0.0, float(d.mean()),
                      low, high, p)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), in the order given; NaN stays NaN
    and does not count towards the number of tests."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    m = len(tested)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def every_round_faster(fast: Sequence[float], slow: Sequence[float], by: float = 1.0) -> bool:
    """Whether every round (timing) of `fast` beat every round of `slow` by the factor `by`.
    With three rounds a side this is a one-sided rank test at p = 0.05 (one of the 20 equally
    likely orders of six exchangeable rounds): how settings are told apart on a noisy machine."""
    return min(fast) > by * max(slow)


@dataclass(frozen=True)
class Ratio:
    """The geometric mean of paired ratios (round by round) and its 95% interval; NaN bounds for
    fewer than two."""

    n: int
    mean: float
    low: float
    high: float

    def text(self) -> str:
        """`1.81 (1.72-1.90)`: the mean and its interval."""
        return f"{self.mean:.2f} ({self.low:.2f}-{self.high:.2f})"


def ratio_interval(ratios: Sequence[float]) -> Ratio:
    """A paired t-interval on the logs of `ratios`, exponentiated: a speed-up measured round by
    round (each round timing both sides in turn) with the interval its rounds support."""
    values = np.asarray(ratios, dtype=float)
    if len(values) == 0 or not np.all(np.isfinite(values) & (values > 0)):
        raise ValueError(f"ratios must be positive and finite, got {list(ratios)}")
    logs = np.log(values)
    c = paired(logs, "log ratio")
    return Ratio(len(logs), math.exp(c.diff), math.exp(c.low), math.exp(c.high))


import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from squeezestudy.analysis import stats


def test_welch_matches_scipy_interval_and_p():
    a, b = [0.9099, 0.9131, 0.9056], [0.9166, 0.9130, 0.9202]
    c = stats.welch(a, b, "one-Fire", "LeNet")
    ref = st.ttest_ind(a, b, equal_var=False)
    interval = ref.confidence_interval(0.95)
    assert c.p == pytest.approx(ref.pvalue)
    assert (c.low, c.high) == (pytest.approx(interval.low), pytest.approx(interval.high))
    assert c.diff == pytest.approx(np.mean(a) - np.mean(b))
    assert c.n_a == c.n_b == 3


def test_wording_follows_the_interval():
    close = stats.welch([0.90, 0.91, 0.92], [0.905, 0.915, 0.925], "A", "B")
    assert not close.distinguishable
    assert close.verdict().startswith("A and B: not distinguishable at n = 3")
    far = stats.welch([0.90, 0.901, 0.902], [0.80, 0.801, 0.802], "A", "B")
    assert far.distinguishable and far.low > 0
    assert far.verdict().startswith("A is 10.00 points higher than B (n = 3, 95% CI [")
    assert stats.welch([0.80, 0.801], [0.90, 0.902], "A", "B").verdict().startswith("A is 10.05 points lower")


def test_a_single_seed_is_never_ranked():
    c = stats.welch([0.9176], [0.9099, 0.9131, 0.9056], "8 Fires", "1 Fire")
    assert not c.testable and not c.distinguishable and math.isnan(c.p)
    assert "untested" in c.verdict() and "n = 1 vs 3" in c.verdict()
    with pytest.raises(ValueError, match="no values"):
        stats.welch([], [0.9])


def test_aggregate_groups_by_what_the_caller_names():
    runs = pd.DataFrame({"model": ["a", "a", "b", "b", "b"], "aug": [0, 0, 0, 1, 1],
                         "test_acc": [0.8, 0.9, 0.7, 0.6, 0.8]})
    by_model = stats.aggregate(runs, "model")
    assert by_model.loc["a", "n"] == 2 and by_model.loc["a", "mean"] == pytest.approx(0.85)
    assert by_model.loc["b", "std"] == pytest.approx(np.std([0.7, 0.6, 0.8], ddof=1))
    assert by_model.loc["b", "sem"] == pytest.approx(by_model.loc["b", "std"] / math.sqrt(3))
    both = stats.aggregate(runs, ["model", "aug"])
    assert both.loc[("b", 0), "n"] == 1 and math.isnan(both.loc[("b", 0), "std"])
    assert stats.mean_std([0.9099, 0.9131, 0.9056]) == "90.95 ± 0.38"
    assert stats.mean_std([0.9176]) == "91.76"


def test_paired_differences_against_zero():
    d = [0.002, -0.001, 0.004, 0.001]
    c = stats.paired(d, "bf16 − fp32")
    ref = st.ttest_1samp(d, 0.0)
    interval = ref.confidence_interval(0.95)
    assert c.p == pytest.approx(ref.pvalue)
    assert (c.low, c.high) == (pytest.approx(interval.low), pytest.approx(interval.high))
    assert not c.distinguishable
    assert c.verdict().startswith("bf16 − fp32: mean +0.15 points, not distinguishable from zero at n = 4")
    clear = stats.paired([0.01, 0.011, 0.012])
    assert clear.verdict().startswith("difference: mean +1.10 points, distinguishable")
    assert not stats.paired([0.01]).testable

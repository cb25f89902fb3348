"""Helpers of every generated table: the runs a table needs, GitHub markdown, the error."""

from __future__ import annotations

import pandas as pd

from squeezestudy.analysis.results import select
from squeezestudy.core.paths import RUNS_DIR


class ReportError(ValueError):
    """The README and the runs disagree, or a marker is missing."""


def runs_matching(pattern: str, runs: pd.DataFrame) -> pd.DataFrame:
    chosen = select(runs, pattern)
    if chosen.empty:
        raise ReportError(f"no finished run matches {pattern!r} in {RUNS_DIR}; run the batch first")
    return chosen


def markdown_table(frame: pd.DataFrame, align: str) -> str:
    """A GitHub table; `align` has one character per column: l(eft) or r(ight)."""
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"


def trained_on(group: pd.DataFrame) -> str:
    name = group.device_name.iloc[0]
    device = "CPU" if str(name).startswith("cpu") else name
    return f"{device}, {group.precision.iloc[0]}, {group.train_time_s.mean() / 60:.1f} min a run"

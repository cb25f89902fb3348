"""The result tables of README and docs/*.md, generated from `outputs/`: `squeezestudy report`
writes each between its `<!-- report:NAME -->` and `<!-- /report:NAME -->` markers, wherever they
are (once across the documents); `squeezestudy report --check` fails when a committed table
differs from what the runs give (CI runs it)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from squeezestudy.analysis.results import collect_runs
from squeezestudy.core.paths import MANIFEST, README, REPO_ROOT, RUNS_DIR, display_path
from squeezestudy.report.experiments import bypass_table, depth_table, note_table, pct_table, sr_table
from squeezestudy.report.findings import claims_table, comparison_table, headline_table, search_table
from squeezestudy.report.markdown import ReportError
from squeezestudy.report.pairs import allocator_table, three_x_table
from squeezestudy.report.records import (
    deep_compression_table,
    file_search_table,
    headline_compression_table,
    headline_speed_table,
    layer_files_table,
    layer_search_table,
    peaks_table,
    small_model_readings_table,
    speed_table,
    tuning_table,
    weights_table,
)
from squeezestudy.training import rundir

MARKER = re.compile(r"(<!-- report:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /report:(?P=name) -->)", re.S)


TABLES: dict[str, Callable[[pd.DataFrame], str]] = {
    "claims": claims_table, "note": note_table, "sr": sr_table, "pct": pct_table, "bypass": bypass_table,
    "depth": depth_table, "comparisons": comparison_table, "deep_compression": deep_compression_table,
    "headline": headline_table, "headline_compression": headline_compression_table,
    "tuning": tuning_table, "speed": speed_table, "peaks": peaks_table, "weights": weights_table,
    "headline_speed": headline_speed_table, "small_model_readings": small_model_readings_table,
    "three_x": three_x_table, "allocator": allocator_table,
    "search": search_table,
    "file_search": file_search_table,
    "layer_search": layer_search_table,
    "layer_files": layer_files_table,
}


def expected_runs(manifest: str | Path = MANIFEST) -> list[str]:
    """The runs the tables read: every training run of the manifest whose directory is in the
    study's runs directory (outputs/runs), in manifest order."""
    from squeezestudy.batch.manifest import check, load_manifest

    study = RUNS_DIR.resolve()
    return list(dict.fromkeys(run.run_dir.name for runs in check(load_manifest(manifest), REPO_ROOT).values()
                              for run in runs if run.run_dir is not None and not run.always
                              and run.run_dir.resolve().parent == study))


def incomplete_runs(runs_dir: str | Path, names: list[str]) -> list[str]:
    """Each of `names` that is not a consistent finished run in `runs_dir`, with why."""
    problems = []
    for name in names:
        run_dir = Path(runs_dir) / name
        if not (run_dir / rundir.METRICS).is_file():
            state = "unfinished" if (run_dir / rundir.CHECKPOINT).is_file() else "missing"
            problems.append(f"{name} ({state}: no {rundir.METRICS})")
            continue
        try:
            problem = rundir.inconsistency(run_dir, rundir.read_metrics(run_dir / rundir.METRICS))
        except (rundir.ResultFileError, KeyError) as err:
            problem = str(err)
        if problem:
            problems.append(f"{name} (inconsistent: {problem})")
    return problems


def render(runs_dir: str | Path = RUNS_DIR, expected: list[str] | None = None) -> dict[str, str]:
    """Every table, from the finished runs of `runs_dir`. Refuses (ReportError, naming each) when a
    run the tables should read is missing, unfinished or inconsistent, rather than compute them
    on fewer seeds; `expected` defaults to the manifest's runs for the study's runs directory."""
    if expected is None and Path(runs_dir).resolve() == RUNS_DIR.resolve():
        expected = expected_runs()
    problems = incomplete_runs(runs_dir, expected or [])
    if problems:
        raise ReportError(f"{len(problems)} run(s) of {MANIFEST.name} are not finished runs in "
                          f"{display_path(Path(runs_dir))}, so the tables would be computed on fewer "
                          f"seeds: {'; '.join(problems)}. Finish them (`squeezestudy batch --profile "
                          "PROFILE`; an unfinished run resumes), restore them from git (`git checkout -- "
                          "outputs/runs`), or take them out of runs.yaml if they were dropped on purpose")
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
    from squeezestudy.core import fileio

    for path in paths:
        if new[str(path)] != texts[str(path)]:
            fileio.write_text(path, new[str(path)])
    print(f"{shown}: {len(changed)} of {len(TABLES)} tables updated" + (f" ({', '.join(changed)})"
                                                                       if changed else ""))
    return 0

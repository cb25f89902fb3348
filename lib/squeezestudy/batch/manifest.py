"""Batch runs of the notebooks through papermill on Dask, from the manifest `runs.yaml`.

A manifest has `profiles`, each a list of entries. An entry names a notebook,
its parameters and where the executed copy goes; `seeds: [0, 1, 2]` expands
one entry into one run per seed, and `{seed}` / `{name}` in strings are filled in.
A sweep adds `grid: {sr: [0.25, 0.5]}`: one run per seed and grid point, seed-major
(an interrupted sweep has every point at its first seeds), `{sr}` filled in like `{seed}`.

    profiles:
      smoke:
        env: {SQUEEZESTUDY_SMOKE: "1"}   # set for the kernels of this profile
        runs:
          - name: lenet-s{seed}
            notebook: notebooks/05_training.ipynb
            output: outputs/smoke/notebooks/{name}.ipynb
            seeds: [0]
            parameters: {model: lenet, epochs: 1, seed: "{seed}"}

Before anything runs, the whole manifest is checked (its structure, every profile's entries,
each run's parameters against the `parameters` cell of its notebook, two runs writing the same
notebook or run directory): one error lists every problem. A run whose executed notebook
exists with the same parameters and no error is skipped unless forced; `always: true` marks
notebooks that only read results, re-run every time, after the training runs above them.
`runner.run_batch` executes the runs (batch.execute) on a local or remote Dask cluster.
"""

from __future__ import annotations

import ast
import difflib
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from squeezestudy.core import paths
from squeezestudy.core.paths import MANIFEST, REPO_ROOT, SMOKE_ENV

TYPE_NAMES = {"int": (int,), "float": (float, int), "str": (str,), "bool": (bool,),
              "list": (list,), "dict": (dict,)}
ENTRY_KEYS = {"name": "str", "notebook": "str", "output": "str", "seeds": "list", "grid": "dict",
              "parameters": "dict", "always": "bool"}
REQUIRED_KEYS = ("name", "notebook", "output")
PROFILE_KEYS = ("runs", "env")
# Where notebook 05 puts its runs, relative to the root (paths imports no torch: a batch starts fast)
RUNS_SUBDIR = paths.RUNS_DIR.relative_to(REPO_ROOT)
SMOKE_RUNS_SUBDIR = paths.SMOKE_RUNS_DIR.relative_to(REPO_ROOT)


class ManifestError(ValueError):
    """The manifest or a run's parameters are wrong; nothing was executed."""


@dataclass
class Run:
    name: str
    notebook: Path
    output: Path
    parameters: dict = field(default_factory=dict)
    always: bool = False
    run_dir: Path | None = None  # where a training notebook writes its run (None: not a training run)

    def already_done(self) -> bool:
        if self.always or not self.output.is_file():
            return False
        try:
            meta = json.loads(self.output.read_text())["metadata"].get("papermill", {})
        except (ValueError, KeyError, AttributeError):
            return False
        # no end_time: the execution was interrupted (papermill saves after every cell)
        return (meta.get("parameters") == self.parameters and not meta.get("exception")
                and meta.get("end_time") is not None)


@dataclass
class Outcome:
    run: Run
    status: str  # ok, skipped, failed, interrupted, cancelled
    seconds: float = 0.0
    error: str = ""
    note: str = ""  # e.g. retried after its worker died


def _fill(value, context: dict):
    if isinstance(value, str):
        if value.startswith("{") and value.endswith("}") and value[1:-1] in context:
            return context[value[1:-1]]  # a whole-value placeholder keeps its type (int, float)
        return value.format(**context)
    if isinstance(value, dict):
        return {k: _fill(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, context) for v in value]
    return value


def load_manifest(path: str | Path = MANIFEST) -> dict:
    """The manifest's YAML, with its top level checked (the entries are checked by `expand`)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} not found; pass --manifest PATH")
    try:
        manifest = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ManifestError(f"{path}{where}: not valid YAML ({problem}); nothing was run") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("profiles"), dict):
        raise ManifestError(f"{path}: needs a 'profiles' mapping of profile name -> "
                            "{runs: [...], env: {...}}; nothing was run")
    unknown = sorted(set(manifest) - {"profiles"})
    if unknown:
        raise ManifestError(f"{path}: unknown top-level key(s) {', '.join(unknown)} "
                            "(a manifest has only 'profiles'); nothing was run")
    return manifest


def _type_problem(value, expected: str) -> str | None:
    if expected == "list" and not isinstance(value, list):
        return f"must be a list, e.g. [0, 1, 2], not {type(value).__name__} {value!r}"
    if expected == "dict" and not isinstance(value, dict):
        return f"must be a mapping (key: value), not {type(value).__name__} {value!r}"
    if expected == "str" and not isinstance(value, str):
        return f"must be a string, not {type(value).__name__} {value!r}"
    if expected == "bool" and not isinstance(value, bool):
        return f"must be true or false, not {value!r}"
    return None


def _entry_problems(entry, label: str, root: Path) -> list[str]:
    if not isinstance(entry, dict):
        return [f"{label}: must be a mapping with name, notebook and output, "
                f"not {type(entry).__name__} {entry!r}"]
    problems = []
    for key in entry:
        if key not in ENTRY_KEYS:
            close = difflib.get_close_matches(str(key), ENTRY_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(ENTRY_KEYS)})"
            problems.append(f"{label}: unknown key {key!r}{hint}")
    missing = [k for k in REQUIRED_KEYS if k not in entry]
    if missing:
        problems.append(f"{label}: missing {', '.join(missing)}")
    for key, expected in ENTRY_KEYS.items():
        problem = _type_problem(entry[key], expected) if key in entry else None
        if problem:
            problems.append(f"{label}: {key!r} {problem}")
    seeds = entry.get("seeds")
    if isinstance(seeds, list) and (not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                          for s in seeds)):
        problems.append(f"{label}: 'seeds' must be a non-empty list of integers, got {seeds!r}")
    grid = entry.get("grid")
    if isinstance(grid, dict) and not all(isinstance(v, list) and v for v in grid.values()):
        problems.append(f"{label}: 'grid' must map each name to a non-empty list of values")
    notebook = entry.get("notebook")
    if isinstance(notebook, str) and not (root / notebook).is_file():
        problems.append(f"{label}: notebook {notebook} not found (paths are relative to {root})")
    return problems


def expand(manifest: dict, profile: str, root: Path = REPO_ROOT) -> list[Run]:
    """The runs of one profile, or a ManifestError listing every problem of its entries."""
    runs, problems = _expand(manifest, profile, root)
    if problems:
        raise ManifestError("nothing was run; fix the manifest first:\n  " + "\n  ".join(problems))
    return runs


def _expand(manifest: dict, profile: str, root: Path) -> tuple[list[Run], list[str]]:
    profiles = manifest["profiles"]
    if profile not in profiles:
        raise ManifestError(f"unknown profile {profile!r}; the manifest has {', '.join(profiles)}")
    spec = profiles[profile]
    if not isinstance(spec, dict) or not isinstance(spec.get("runs"), list):
        return [], [f"profile {profile}: needs a 'runs' list (profile: {{runs: [...], env: {{...}}}})"]
    problems = [f"profile {profile}: unknown key {k!r} (a profile has {', '.join(PROFILE_KEYS)})"
                for k in spec if k not in PROFILE_KEYS]
    if "env" in spec and not isinstance(spec["env"], dict):
        problems.append(f"profile {profile}: 'env' must be a mapping VARIABLE: value")
    runs: list[Run] = []
    for i, entry in enumerate(spec["runs"]):
        name = entry.get("name") if isinstance(entry, dict) else None
        named = f" ({name})" if isinstance(name, str) else ""
        label = f"profile {profile}, entry {i + 1}{named}"
        entry_problems = _entry_problems(entry, label, root)
        if entry_problems:
            problems += entry_problems
            continue
        grid = entry.get("grid") or {}
        try:
            for seed in entry.get("seeds", [None]):
                for point in itertools.product(*grid.values()):
                    context = {"seed": seed, "profile": profile, **dict(zip(grid, point, strict=True))}
                    name = _fill(entry["name"], context)
                    context["name"] = name
                    runs.append(Run(name=name, notebook=root / entry["notebook"],
                                    output=root / _fill(entry["output"], context),
                                    parameters=_fill(entry.get("parameters", {}), context),
                                    always=bool(entry.get("always", False))))
        except (KeyError, IndexError) as err:
            problems.append(f"{label}: placeholder {err} is neither seed, name nor a grid key")
        except ValueError as err:  # a lone brace in a string
            problems.append(f"{label}: {err} (write {{{{ and }}}} for literal braces)")
    names = [r.name for r in runs]
    problems += [f"profile {profile}: run name {n!r} used twice"
                 for n in sorted({n for n in names if names.count(n) > 1})]
    outputs: dict[Path, list[str]] = {}
    for r in runs:
        outputs.setdefault(r.output.resolve(), []).append(r.name)
    problems += [f"profile {profile}: runs {', '.join(ns)} all write the notebook {shown(p, root)}"
                 for p, ns in outputs.items() if len(ns) > 1]
    return runs, problems


def shown(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def notebook_parameters(notebook: Path) -> dict[str, tuple[str, object]]:
    """Name -> (inferred type name, default value), from the notebook's `parameters` cell."""
    import papermill

    if not notebook.is_file():
        raise ManifestError(f"notebook {notebook} not found")
    try:
        found = papermill.inspect_notebook(str(notebook))
    except Exception as err:  # not JSON, not a notebook: nbformat's and papermill's own errors
        raise ManifestError(f"notebook {notebook} cannot be read ({type(err).__name__}: "
                            f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}); "
                            "restore it from git") from None
    return {name: (_declared_type(info), _default(info)) for name, info in found.items()}


def _default(info: dict):
    try:
        return ast.literal_eval(info.get("default") or "None")
    except (ValueError, SyntaxError):
        return None


def _declared_type(info: dict) -> str:
    """The annotation papermill read (`x: int = 1`), else the type of the default's literal;
    "None" (accept anything) for a default of None or an expression."""
    if info.get("inferred_type_name") not in (None, "None"):
        return info["inferred_type_name"]
    default = _default(info)
    return "None" if default is None else type(default).__name__


def _parameter_problems(run: Run, declared: dict[str, tuple[str, object]]) -> list[str]:
    problems = []
    for name, value in run.parameters.items():
        if name not in declared:
            problems.append(f"{run.name}: {run.notebook.name} has no parameter {name!r} "
                            f"(it has: {', '.join(declared) or 'none'})")
            continue
        expected = declared[name][0].split("|")[0].strip()
        allowed = TYPE_NAMES.get(expected)
        if value is None or allowed is None:
            continue  # None and untyped defaults accept anything
        if not isinstance(value, allowed) or (isinstance(value, bool) and expected != "bool"):
            problems.append(f"{run.name}: parameter {name!r} is {type(value).__name__} "
                            f"{value!r}, the notebook expects {expected}")
    return problems


def run_directory(run: Run, declared: dict[str, tuple[str, object]], env: dict[str, str],
                  root: Path) -> Path | None:
    """Where a training notebook (one with a `run_name` parameter, like 05) writes its run:
    the notebook's own rule (`notebook.training_setup`) applied to its parameters."""
    if "run_name" not in declared:
        return None
    values = {name: default for name, (_, default) in declared.items()} | run.parameters
    name = values.get("run_name") or f"{values.get('model')}-s{values.get('seed')}"
    if env.get(SMOKE_ENV, os.environ.get(SMOKE_ENV, "")) not in ("", "0", "false"):
        return root / SMOKE_RUNS_SUBDIR / name
    if values.get("output_dir"):
        return (run.notebook.parent / values["output_dir"] / name).resolve()
    return root / RUNS_SUBDIR / name


def check(manifest: dict, root: Path = REPO_ROOT) -> dict[str, list[Run]]:
    """Every profile's runs, each with its run directory, or one ManifestError listing every
    problem of the manifest: structure, parameters, two runs writing the same place."""
    problems: list[str] = []
    expanded: dict[str, list[Run]] = {}
    for profile in manifest["profiles"]:
        runs, found = _expand(manifest, profile, root)
        problems += found
        expanded[profile] = runs
    cache: dict[Path, dict[str, tuple[str, object]] | None] = {}
    for profile, runs in expanded.items():
        spec = manifest["profiles"][profile]
        env = {k: str(v) for k, v in (spec.get("env") or {}).items()} if isinstance(spec, dict) \
            and isinstance(spec.get("env"), dict) else {}
        for run in runs:
            if run.notebook not in cache:
                try:
                    cache[run.notebook] = notebook_parameters(run.notebook)
                except ManifestError as err:
                    cache[run.notebook] = None
                    problems.append(f"profile {profile}, run {run.name}: {err}")
            declared = cache[run.notebook]
            if declared is not None:
                problems += [f"profile {profile}, run {p}" for p in _parameter_problems(run, declared)]
                run.run_dir = run_directory(run, declared, env, root)
        owners: dict[Path, list[str]] = {}
        for run in runs:
            if run.run_dir is not None and not run.always:
                owners.setdefault(run.run_dir, []).append(run.name)
        problems += [f"profile {profile}: runs {', '.join(ns)} all train into {shown(d, root)} "
                     "(give each its own run_name)" for d, ns in owners.items() if len(ns) > 1]
    if problems:
        raise ManifestError("nothing was run; fix the manifest first:\n  " + "\n  ".join(problems))
    return expanded


def select(runs: list[Run], only: list[str] | None, profile: str) -> list[Run]:
    """The runs named in `only` (names or prefixes), all of them without."""
    if not only:
        return runs
    unknown = [n for n in only if not any(r.name == n or r.name.startswith(n) for r in runs)]
    if unknown:
        raise ManifestError(f"no run named {', '.join(unknown)} in profile {profile}; "
                            f"runs: {', '.join(r.name for r in runs)}")
    return [r for r in runs if any(r.name == n or r.name.startswith(n) for n in only)]


def pending_training(profile: str, manifest_path: str | Path = MANIFEST,
                     root: Path | None = None) -> list[Run]:
    """The training runs of `profile` that are not done: what `batch` would train now (the reading
    notebooks, `always: true`, train nothing)."""
    runs = check(load_manifest(manifest_path), root or REPO_ROOT).get(profile)
    if runs is None:
        raise ManifestError(f"unknown profile {profile!r}")
    return [r for r in runs if r.run_dir is not None and not r.always and not r.already_done()]

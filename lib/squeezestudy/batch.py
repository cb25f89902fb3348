"""Batch runs of the notebooks through papermill, from the manifest `runs.yaml`.

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

Before anything runs, every run's parameters are checked against the
`parameters` cell of its notebook (names and types). A run whose executed
notebook exists with the same parameters and no error is skipped unless forced;
`always: true` marks notebooks that only read results, re-run every time.
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import queue
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import notebook_format

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST = REPO_ROOT / "runs.yaml"
TYPE_NAMES = {"int": (int,), "float": (float, int), "str": (str,), "bool": (bool,),
              "list": (list,), "dict": (dict,)}


class ManifestError(ValueError):
    """The manifest or a run's parameters are wrong; nothing was executed."""


@dataclass
class Run:
    name: str
    notebook: Path
    output: Path
    parameters: dict = field(default_factory=dict)
    always: bool = False

    def already_done(self) -> bool:
        if self.always or not self.output.is_file():
            return False
        try:
            meta = json.loads(self.output.read_text())["metadata"].get("papermill", {})
        except (ValueError, KeyError):
            return False
        # no end_time: the execution was interrupted (papermill saves after every cell)
        return (meta.get("parameters") == self.parameters and not meta.get("exception")
                and meta.get("end_time") is not None)


@dataclass
class Outcome:
    run: Run
    status: str  # ok, skipped, failed
    seconds: float = 0.0
    error: str = ""


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
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} not found")
    manifest = yaml.safe_load(path.read_text()) or {}
    if not isinstance(manifest.get("profiles"), dict):
        raise ManifestError(f"{path}: needs a 'profiles' mapping of profile name -> list of runs")
    return manifest


def expand(manifest: dict, profile: str, root: Path = REPO_ROOT) -> list[Run]:
    profiles = manifest["profiles"]
    if profile not in profiles:
        raise ManifestError(f"unknown profile {profile!r}; the manifest has {', '.join(profiles)}")
    entries = profiles[profile].get("runs") if isinstance(profiles[profile], dict) else None
    if not isinstance(entries, list):
        raise ManifestError(f"profile {profile}: needs a 'runs' list")
    runs: list[Run] = []
    for i, entry in enumerate(entries):
        missing = {"name", "notebook", "output"} - set(entry)
        if missing:
            raise ManifestError(f"profile {profile}, entry {i + 1}: missing {', '.join(sorted(missing))}")
        grid = entry.get("grid") or {}
        if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
            raise ManifestError(f"profile {profile}, entry {i + 1}: 'grid' must map each name "
                                "to a non-empty list of values")
        for seed in entry.get("seeds", [None]):
            for point in itertools.product(*grid.values()):
                context = {"seed": seed, "profile": profile, **dict(zip(grid, point, strict=True))}
                try:
                    name = _fill(entry["name"], context)
                    context["name"] = name
                    runs.append(Run(name=name, notebook=root / entry["notebook"],
                                    output=root / _fill(entry["output"], context),
                                    parameters=_fill(entry.get("parameters", {}), context),
                                    always=bool(entry.get("always", False))))
                except (KeyError, IndexError) as err:
                    raise ManifestError(f"profile {profile}, entry {i + 1}: placeholder {err} "
                                        "is neither seed, name nor a grid key") from None
    names = [r.name for r in runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ManifestError(f"profile {profile}: run names used twice: {', '.join(duplicates)}")
    return runs


def notebook_parameters(notebook: Path) -> dict[str, str]:
    """Name -> inferred type name, from the notebook's `parameters` cell."""
    import papermill

    if not notebook.is_file():
        raise ManifestError(f"notebook {notebook} not found")
    found = papermill.inspect_notebook(str(notebook))
    return {name: _declared_type(info) for name, info in found.items()}


def _declared_type(info: dict) -> str:
    """The annotation papermill read (`x: int = 1`), else the type of the default's literal;
    "None" (accept anything) for a default of None or an expression."""
    if info.get("inferred_type_name") not in (None, "None"):
        return info["inferred_type_name"]
    try:
        default = ast.literal_eval(info.get("default") or "None")
    except (ValueError, SyntaxError):
        return "None"
    return "None" if default is None else type(default).__name__


def validate(runs: list[Run]) -> None:
    """Check every run's parameters against its notebook before anything executes."""
    problems = []
    cache: dict[Path, dict[str, str]] = {}
    for run in runs:
        if run.notebook not in cache:
            cache[run.notebook] = notebook_parameters(run.notebook)
        declared = cache[run.notebook]
        for name, value in run.parameters.items():
            if name not in declared:
                problems.append(f"{run.name}: {run.notebook.name} has no parameter {name!r} "
                                f"(it has: {', '.join(declared) or 'none'})")
                continue
            expected = declared[name].split("|")[0].strip()
            allowed = TYPE_NAMES.get(expected)
            if value is None or allowed is None:
                continue  # None and untyped defaults accept anything
            if not isinstance(value, allowed) or (isinstance(value, bool) and expected != "bool"):
                problems.append(f"{run.name}: parameter {name!r} is {type(value).__name__} "
                                f"{value!r}, the notebook expects {expected}")
    if problems:
        raise ManifestError("nothing was run; fix these parameters first:\n  " + "\n  ".join(problems))


def _kernel_manager(env: dict[str, str]):
    """A kernel manager class whose kernels start with `env` added to this process's
    environment: each parallel run gets its own variables (its GPU), and this process's
    environment is never changed."""
    from jupyter_client.manager import AsyncKernelManager

    class KernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            kw["env"] = {**os.environ, **kw.get("env", {}), **env}
            # a caller's MPLBACKEND=Agg would leave the executed notebooks without figures
            kw["env"].pop("MPLBACKEND", None)
            return await super().start_kernel(**kw)

    return KernelManager


def execute(run: Run, cwd: Path, kernel: str | None = None, env: dict[str, str] | None = None) -> Outcome:
    import papermill

    run.output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(str(run.notebook), str(run.output), parameters=run.parameters,
                                   cwd=str(cwd), kernel_name=kernel, progress_bar=False,
                                   log_output=False, request_save_on_cell_execute=True,
                                   kernel_manager_class=_kernel_manager(env or {}))
    except Exception as err:
        message = str(err).strip().splitlines()
        summary = next((line for line in reversed(message) if line.strip()), type(err).__name__)
        return Outcome(run, "failed", time.perf_counter() - start, summary[:300] or traceback.format_exc())
    finally:
        if run.output.is_file():  # stored as JupyterLab saves it: opening it changes nothing
            notebook_format.normalize(run.output)
    return Outcome(run, "ok", time.perf_counter() - start)


def run_batch(profile: str, only: list[str] | None = None, force: bool = False, jobs: int = 1,
              manifest_path: str | Path = MANIFEST, kernel: str | None = None, dry_run: bool = False,
              gpus: list[str] | None = None, echo=print) -> list[Outcome]:
    """Validate then execute a profile (or the runs named in `only`); returns one outcome per run.
    gpus: GPU ids (e.g. ["0", "1"]) shared out among the parallel runs, one CUDA_VISIBLE_DEVICES
    per kernel; with more jobs than GPUs, runs share them round-robin."""
    if jobs < 1:
        raise ManifestError(f"--jobs must be at least 1, got {jobs}")
    if gpus is not None and (not gpus or not all(g.strip() for g in gpus)):
        raise ManifestError(f"--gpus needs GPU ids such as 0,1; got {gpus!r}")
    manifest = load_manifest(manifest_path)
    runs = expand(manifest, profile)
    if only:
        unknown = [n for n in only if not any(r.name == n or r.name.startswith(n) for r in runs)]
        if unknown:
            raise ManifestError(f"no run named {', '.join(unknown)} in profile {profile}; "
                                f"runs: {', '.join(r.name for r in runs)}")
        runs = [r for r in runs if any(r.name == n or r.name.startswith(n) for n in only)]
    validate(runs)
    todo = [r for r in runs if force or not r.already_done()]
    outcomes = [Outcome(r, "skipped") for r in runs if r not in todo]
    for o in outcomes:
        echo(f"skip   {o.run.name} (done: {o.run.output.relative_to(REPO_ROOT)})")
    if dry_run:
        for r in todo:
            echo(f"would run {r.name}: {r.notebook.name} {r.parameters}")
        return outcomes
    # What every kernel gets on top of this process's environment: the profile's variables.
    env = {"PYDEVD_DISABLE_FILE_VALIDATION": "1",
           **{k: str(v) for k, v in (manifest["profiles"][profile].get("env") or {}).items()}}
    if jobs > 1 and "OMP_NUM_THREADS" not in os.environ:
        # share the cores among parallel kernels: on 2 cores, two 1-thread runs of a
        # small model train faster together than one 2-thread run
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    slots = [{**env, "CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)].strip()} for i in range(jobs)] \
        if gpus else [env] * jobs
    return outcomes + _execute_all(todo, slots, kernel, echo)


def _execute_all(todo: list[Run], slots: list[dict[str, str]], kernel: str | None, echo) -> list[Outcome]:
    """Runs `todo` with len(slots) in parallel, in order (one slot: one after the other); each
    running notebook holds one slot (its kernel's environment) until it ends."""
    outcomes: list[Outcome] = []
    total = len(todo)
    done = 0
    free: queue.SimpleQueue[dict[str, str]] = queue.SimpleQueue()
    for slot in slots:
        free.put(slot)

    def report(outcome: Outcome) -> None:
        nonlocal done
        done += 1
        tail = f"  {outcome.error}" if outcome.error else ""
        echo(f"[{done}/{total}] {outcome.status:6s} {outcome.run.name} ({outcome.seconds:.0f}s){tail}")

    def start(run: Run) -> Outcome:
        env = free.get()
        gpu = f" on GPU {env['CUDA_VISIBLE_DEVICES']}" if "CUDA_VISIBLE_DEVICES" in env else ""
        echo(f"start  {run.name}{gpu}")
        try:
            return execute(run, run.notebook.parent, kernel, env)
        finally:
            free.put(env)

    with ThreadPoolExecutor(max_workers=len(slots)) as pool:
        futures = [pool.submit(start, r) for r in todo]
        for future in as_completed(futures):
            outcome = future.result()
            report(outcome)
            outcomes.append(outcome)
    return outcomes


def summary_table(outcomes: list[Outcome]) -> str:
    lines = [f"{'run':40s} {'status':8s} {'seconds':>8s}"]
    for o in outcomes:
        lines.append(f"{o.run.name:40s} {o.status:8s} {o.seconds:8.0f}")
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ok", "skipped", "failed")}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items())
                 + f"; {sum(o.seconds for o in outcomes) / 60:.1f} min")
    return "\n".join(lines)

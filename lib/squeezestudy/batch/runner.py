"""Run a profile of the manifest: check it, skip what is done, execute the rest on Dask,
and summarise the outcomes."""

from __future__ import annotations

import os
from pathlib import Path

from squeezestudy.batch import cluster, execute
from squeezestudy.batch.manifest import ManifestError, Outcome, check, load_manifest, select, shown
from squeezestudy.core.paths import MANIFEST, REPO_ROOT


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a batch: queued runs were cancelled, running ones interrupted."""

    def __init__(self, outcomes: list[Outcome]):
        super().__init__("batch interrupted")
        self.outcomes = outcomes


DATA_ENV = "FASHION_MNIST_DIR"  # data.fashion_mnist.ENV_VAR (not imported here: it loads torch)


def data_dir_env() -> dict[str, str]:
    """$FASHION_MNIST_DIR for the kernels, absolute: a relative one names a folder from this shell's
    directory, and the kernels of a local cluster run in the notebooks' folder (a remote worker keeps
    its own)."""
    value = os.environ.get(DATA_ENV)
    return {DATA_ENV: str(Path(value).expanduser().resolve())} if value else {}


def run_batch(profile: str, only: list[str] | None = None, force: bool = False, jobs: int | None = None,
              manifest_path: str | Path = MANIFEST, kernel: str | None = None, dry_run: bool = False,
              gpus: list[str] | None = None, scheduler: str | None = None,
              scheduler_file: str | None = None, root: Path | None = None, echo=print) -> list[Outcome]:
    """Check the manifest, then execute a profile (or the runs named in `only`) on Dask; returns
    one outcome per run. jobs: workers of a local cluster; scheduler / scheduler_file: an existing
    cluster instead. gpus: GPU ids (e.g. ["0", "1"]) for the local cluster's workers, one
    CUDA_VISIBLE_DEVICES each (round-robin when there are more workers than GPUs).
    Paths in the manifest are relative to `root` (default: the project). Raises BatchInterrupted
    (with the outcomes) on Ctrl-C."""
    root = root or REPO_ROOT
    target = cluster.ClusterTarget.from_options(jobs, gpus, scheduler, scheduler_file)
    manifest = load_manifest(manifest_path)
    if profile not in manifest["profiles"]:
        raise ManifestError(f"unknown profile {profile!r}; the manifest has "
                            f"{', '.join(manifest['profiles'])}")
    runs = select(check(manifest, root)[profile], only, profile)
    todo = [r for r in runs if force or not r.already_done()]
    skipped = [Outcome(r, "skipped") for r in runs if r not in todo]
    for o in skipped:
        echo(f"skip   {o.run.name} (done: {shown(o.run.output, root)})")
    if dry_run:
        for r in todo:
            echo(f"would run {r.name}: {r.notebook.name} {r.parameters}")
        return skipped
    spec = manifest["profiles"][profile]
    env = {"PYDEVD_DISABLE_FILE_VALIDATION": "1", **(data_dir_env() if target.local else {}),
           **{k: str(v) for k, v in (spec.get("env") or {}).items()}}
    executed = execute.execute(runs, todo, env, kernel, target, root, echo)
    by_name = {o.run.name: o for o in skipped + executed}
    outcomes = [by_name[r.name] for r in runs]
    if any(o.status in ("interrupted", "cancelled") for o in outcomes):
        raise BatchInterrupted(outcomes)
    return outcomes


def summary_table(outcomes: list[Outcome]) -> str:
    lines = [f"{'run':40s} {'status':11s} {'seconds':>8s}"]
    for o in outcomes:
        note = f"  {o.note}" if o.note else ""
        lines.append(f"{o.run.name:40s} {o.status:11s} {o.seconds:8.0f}{note}")
    counts = {s: sum(o.status == s for o in outcomes)
              for s in ("ok", "skipped", "failed", "interrupted", "cancelled")}
    shown = {s: n for s, n in counts.items() if n or s in ("ok", "skipped", "failed")}
    lines.append(", ".join(f"{n} {s}" for s, n in shown.items())
                 + f"; {sum(o.seconds for o in outcomes) / 60:.1f} min of run time")
    return "\n".join(lines)

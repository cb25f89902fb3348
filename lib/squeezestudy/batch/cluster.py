"""Where a batch runs: a local Dask cluster (`--jobs N`, `--gpus`) or an existing one
(`--scheduler ADDRESS`, `--scheduler-file PATH`), connected and described."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from squeezestudy.batch.task import (
    ROOT_ENV,
    usable_cores,
)

CONNECT_TIMEOUT_S = 20
WORKER_WAIT_S = 60


class ClusterError(ValueError):
    """The cluster options or the cluster itself are unusable; nothing was run."""


@dataclass
class ClusterTarget:
    jobs: int = 1
    gpus: list[str] | None = None
    scheduler: str | None = None
    scheduler_file: str | None = None

    @classmethod
    def from_options(cls, jobs: int | None, gpus: list[str] | None, scheduler: str | None,
                     scheduler_file: str | None) -> ClusterTarget:
        remote = scheduler is not None or scheduler_file is not None
        if scheduler is not None and scheduler_file is not None:
            raise ClusterError("give --scheduler or --scheduler-file, not both")
        if remote and (jobs is not None or gpus is not None):
            raise ClusterError("--jobs and --gpus start a local cluster; with --scheduler the "
                               "cluster's workers set the parallelism and their GPUs "
                               "(dask worker --resources GPU=1, see docs/batch.md, On a cluster)")
        if jobs is not None and jobs < 1:
            raise ClusterError(f"--jobs must be at least 1, got {jobs}")
        if gpus is not None and (not gpus or not all(g.strip() for g in gpus)):
            raise ClusterError(f"--gpus needs GPU ids such as 0,1; got {','.join(gpus)!r}")
        if scheduler_file is not None:
            _check_scheduler_file(Path(scheduler_file))
        return cls(jobs or 1, gpus, scheduler, scheduler_file)

    @property
    def local(self) -> bool:
        return self.scheduler is None and self.scheduler_file is None


def _check_scheduler_file(path: Path) -> None:
    """The JSON that `dask scheduler --scheduler-file PATH` writes, with the scheduler's address."""
    if not path.is_file():
        raise ClusterError(f"scheduler file {path} not found (dask scheduler --scheduler-file PATH "
                           "writes it)")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ClusterError(f"scheduler file {path} cannot be read as the JSON that `dask scheduler "
                           f"--scheduler-file` writes ({err}); point at that file") from None
    if not isinstance(info, dict) or not isinstance(info.get("address"), str) or not info["address"]:
        raise ClusterError(f"scheduler file {path} holds no scheduler address; point at the file that "
                           "`dask scheduler --scheduler-file PATH` writes")


def _client_within(deadline_s: float, **options):
    """distributed.Client(**options), or ClusterError when it has not connected within the deadline:
    an address that accepts connections but is not a Dask scheduler never answers its handshake,
    and the client's own timeout does not cover that."""
    from distributed import Client

    box: dict = {}

    def make() -> None:
        try:
            box["client"] = Client(**options)
        except BaseException as err:  # handed to the caller
            box["error"] = err

    thread = threading.Thread(target=make, daemon=True, name="squeezestudy-connect")
    thread.start()
    thread.join(deadline_s)
    if thread.is_alive():
        raise TimeoutError(f"no answer as a Dask scheduler within {deadline_s:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["client"]


def dashboard_link(client) -> str | None:
    """The dashboard's address, when the scheduler serves one (it needs bokeh there)."""
    if "dashboard" not in client.scheduler_info().get("services", {}):
        return None
    try:
        has_bokeh = client.run_on_scheduler(lambda: importlib.util.find_spec("bokeh") is not None)
    except Exception:  # a scheduler that refuses to run functions: no way to tell
        has_bokeh = True
    return client.dashboard_link if has_bokeh else None


@contextlib.contextmanager
def _ignoring_sigint() -> Iterator[None]:
    """SIGINT ignored while a local cluster starts: its worker processes inherit that, so a
    Ctrl-C in the terminal reaches only this process, which then stops the batch in order.
    (Kernels start in their own sessions and never see the terminal's Ctrl-C.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _local_cluster(target: ClusterTarget, root: Path):
    """A local cluster on 127.0.0.1: a scheduler and `jobs` worker processes of one thread each
    (LocalCluster's layout), each worker with its own CUDA_VISIBLE_DEVICES when given GPUs."""
    import dask
    from distributed import Nanny, Scheduler, SpecCluster

    # the scheduler's HTTP server (the dashboard, when bokeh is there) on a free port: batches
    # side by side never fight over 8787
    scheduler = {"cls": Scheduler, "options": {
        "host": "127.0.0.1", "dashboard": True, "dashboard_address": "127.0.0.1:0",
        "allowed_failures": 0}}  # a dead worker fails its task at once: the client retries it

    def worker(i: int) -> dict:
        options = {"host": "127.0.0.1", "nthreads": 1, "memory_limit": 0, "dashboard": False,
                   "silence_logs": logging.ERROR, "env": {ROOT_ENV: str(root)}}
        if target.gpus:
            options["env"]["CUDA_VISIBLE_DEVICES"] = target.gpus[i % len(target.gpus)].strip()
            options["resources"] = {"GPU": 1}
        return {"cls": Nanny, "options": options}

    # One task a worker at a time: a queued run is never held by a worker that may die. The
    # nanny's thread variables (OMP_NUM_THREADS=1...) are not set: each run gets its share.
    no_thread_limits = {"OMP_NUM_THREADS": None, "MKL_NUM_THREADS": None, "OPENBLAS_NUM_THREADS": None}
    with dask.config.set({"distributed.scheduler.worker-saturation": 1.0,
                          "distributed.nanny.pre-spawn-environ": no_thread_limits}), _ignoring_sigint():
        return SpecCluster(scheduler=scheduler, workers={i: worker(i) for i in range(target.jobs)},
                           silence_logs=logging.ERROR, name="squeezestudy")


@contextlib.contextmanager
def connect(target: ClusterTarget, root: Path, echo) -> Iterator:
    from distributed import Client

    cluster = None
    try:
        if target.local:
            cluster = _local_cluster(target, root)
            client = Client(cluster, set_as_default=False)
        else:
            where = target.scheduler or f"the scheduler of {target.scheduler_file}"
            try:
                client = _client_within(CONNECT_TIMEOUT_S + 10, address=target.scheduler,
                                        scheduler_file=target.scheduler_file,
                                        timeout=f"{CONNECT_TIMEOUT_S}s", set_as_default=False)
            except (OSError, TimeoutError, ValueError) as err:
                raise ClusterError(f"cannot reach {where}: {err}. Is `dask scheduler` running "
                                   "there? (docs/batch.md, On a cluster)") from None
            try:
                client.wait_for_workers(1, timeout=WORKER_WAIT_S)
            except TimeoutError:
                client.close()
                raise ClusterError(f"no worker joined {where} within {WORKER_WAIT_S} s; start "
                                   "workers with `dask worker ADDRESS`") from None
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.close(timeout=10)
    finally:
        if cluster is not None:
            with _ignoring_sigint(), contextlib.suppress(Exception):
                cluster.close(timeout=20)


def describe(client, target: ClusterTarget) -> str:
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    threads = sum(w["nthreads"] for w in workers)
    hosts = {w["host"] for w in workers}
    gpus = sum(w.get("resources", {}).get("GPU", 0) for w in workers)
    gpu_text = f", {gpus:g} GPU slot(s)" if gpus else ""
    if target.local:
        return (f"dask: local cluster on 127.0.0.1, {len(workers)} worker process(es) of 1 thread, "
                f"{max(1, usable_cores() // len(workers))} core(s) a run{gpu_text}")
    return (f"dask: scheduler {client.scheduler.address}, {len(workers)} worker(s), {threads} thread(s) "
            f"on {len(hosts)} host(s){gpu_text}")

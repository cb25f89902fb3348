"""The batch's executor: Dask distributed, on a local cluster (`--jobs N`) or an existing one
(`--scheduler ADDRESS`, `--scheduler-file PATH`).

Each run is one task (`batch_task.run_on_worker`). The client sends the notebook, its
parameters, its environment and the files it reads; it gets back the executed notebook and the
run's result files and writes them here, atomically. A run whose worker dies is submitted once
more (to the workers left, or the one that replaced it), then reported failed. Ctrl-C cancels
the queued runs, interrupts the running kernels, and shuts a local cluster down.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import queue
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import fileio, notebook_format
from .batch import Outcome, Run
from .batch_task import EVENT_TOPIC, MAX_RETURNED_BYTES, ROOT_ENV, RunResult, RunTask, usable_cores

ATTEMPTS = 2  # a run whose worker dies while running it is run once more
REQUEUES = 5  # a run whose worker died before it started is submitted again, this many times at most
CONNECT_TIMEOUT_S = 20
WORKER_WAIT_S = 60
STOP_GRACE_S = 30  # after Ctrl-C, how long interrupted runs get to hand back their notebook and files
POLL_S = 0.25


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
        if scheduler_file is not None and not Path(scheduler_file).is_file():
            raise ClusterError(f"scheduler file {scheduler_file} not found (dask scheduler "
                               "--scheduler-file PATH writes it)")
        return cls(jobs or 1, gpus, scheduler, scheduler_file)

    @property
    def local(self) -> bool:
        return self.scheduler is None and self.scheduler_file is None


def _dashboard_link(client) -> str | None:
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
    import threading

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
                client = Client(target.scheduler, scheduler_file=target.scheduler_file,
                                timeout=f"{CONNECT_TIMEOUT_S}s", set_as_default=False)
            except (OSError, TimeoutError) as err:
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


def _describe(client, target: ClusterTarget) -> str:
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


def _relative(path: Path, root: Path) -> str | None:
    """`path` relative to the project root (POSIX), None when it lies outside."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def _files_of(directory: Path, root: Path, weights: bool) -> dict[str, bytes]:
    """A run directory's files on this machine (weights *.pt only when `weights`)."""
    if not directory.is_dir() or _relative(directory, root) is None:
        return {}
    return {_relative(p, root): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and not (p.name.startswith(".") and p.name.endswith(".tmp"))
            and (weights or p.suffix != ".pt") and p.stat().st_size <= MAX_RETURNED_BYTES}


class _Batch:
    """One batch on a connected client: submits runs as they become ready, reports, retries
    runs whose worker died, writes what comes back, stops on Ctrl-C."""

    def __init__(self, client, target: ClusterTarget, runs: list[Run], todo: list[Run], env: dict[str, str],
                 kernel: str | None, root: Path, echo):
        self.client, self.target, self.runs, self.todo = client, target, runs, todo
        self.env, self.kernel, self.root, self.echo = env, kernel, root, echo
        self.batch_id = uuid.uuid4().hex[:12]
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.futures: dict = {}  # future -> (run, attempt)
        self.outcomes: dict[str, Outcome] = {}
        self.started: set[str] = set()
        self.notes: dict[str, str] = {}
        self.deaths: dict[str, int] = {}  # run -> workers that died running it
        self.requeues: dict[str, int] = {}  # run -> workers that died holding it, not yet started
        self.written: dict[Path, tuple[str, int]] = {}  # path -> (host, mtime_ns) of the copy written
        # readers (always: true) wait for the training runs above them that this batch executes
        position = {r.name: i for i, r in enumerate(runs)}
        todo_names = {r.name for r in todo}
        self.after = {r.name: {p.name for p in runs[:position[r.name]]
                               if not p.always and p.name in todo_names}
                      for r in todo if r.always}
        self.waiting: list[Run] = []
        info = client.scheduler_info(n_workers=-1)["workers"].values()
        self.gpu_cluster = any(w.get("resources", {}).get("GPU", 0) >= 1 for w in info)
        self.host_threads: dict[str, int] = {}
        for w in info:
            self.host_threads[w["host"]] = self.host_threads.get(w["host"], 0) + w["nthreads"]
        self.shared = target.local  # a local cluster works in this very checkout

    # --- submitting -------------------------------------------------------------------------
    def task(self, run: Run) -> RunTask:
        exclude: tuple[str, ...] = ()
        inputs: dict[str, bytes] = {}
        if run.always:
            above = self.runs[:self.runs.index(run)]
            others = [r for r in self.todo if r not in above and r.run_dir is not None and not r.always]
            exclude = tuple(p for p in (_relative(r.run_dir, self.root) for r in others) if p) \
                + tuple(p for p in (_relative(r.output, self.root) for r in self.runs) if p)
            if not self.shared:
                for r in above:
                    if r.run_dir is not None and not r.always:
                        inputs |= _files_of(r.run_dir, self.root, weights=False)
        elif run.run_dir is not None and not self.shared:
            inputs = _files_of(run.run_dir, self.root, weights=True)  # an unfinished run resumes
        return RunTask(
            batch_id=self.batch_id, name=run.name,
            notebook_path=_relative(run.notebook, self.root) or run.notebook.name,
            notebook=run.notebook.read_bytes(), parameters=run.parameters, env=self.env, kernel=self.kernel,
            run_dir=_relative(run.run_dir, self.root) if run.run_dir is not None else None,  # outside: stays
            exclude=exclude, inputs=inputs, client_host=socket.gethostname(),
            client_root=str(self.root.resolve()), host_threads=self.host_threads)

    def submit(self, run: Run, attempt: int = 1) -> None:
        from .batch_task import run_on_worker

        wants_gpu = self.gpu_cluster and run.run_dir is not None and run.parameters.get("device") != "cpu"
        future = self.client.submit(run_on_worker, self.task(run), pure=False,
                                    key=f"{run.name}-{self.batch_id}-{attempt}",
                                    resources={"GPU": 1} if wants_gpu else None)
        self.futures[future] = (run, attempt)

    def submit_ready(self) -> None:
        for run in list(self.waiting):
            if self.after[run.name] <= set(self.outcomes):
                self.waiting.remove(run)
                self.submit(run)

    # --- results ----------------------------------------------------------------------------
    def store(self, run: Run, result: RunResult) -> None:
        """Write the executed notebook and the run's files here, atomically; a file another run
        of this batch already brought back newer (same host, later mtime) is kept."""
        if result.notebook is not None:
            run.output.parent.mkdir(parents=True, exist_ok=True)
            # stored as JupyterLab saves it, so that opening it changes nothing
            executed = notebook_format.normal_form(
                _with_local_paths(result.notebook, run, self.root).decode("utf-8"))
            if not notebook_format.same_but_timings(run.output, executed):  # else: as committed
                fileio.write_text(run.output, executed)
        for relative, (content, mtime_ns) in result.files.items():
            path = (self.root / relative).resolve()
            if self.root.resolve() not in path.parents:
                continue  # never outside the project
            previous = self.written.get(path)
            if previous is not None and previous[0] == result.host and previous[1] >= mtime_ns:
                continue
            self.written[path] = (result.host, mtime_ns)
            if path.is_file() and path.stat().st_size == len(content) and path.read_bytes() == content:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            fileio.write_bytes(path, content)
        if result.left_on_worker:
            self.notes[run.name] = f"left on {result.host}: {', '.join(result.left_on_worker)}"

    def finish(self, future) -> None:
        from distributed import KilledWorker

        run, attempt = self.futures.pop(future)
        try:
            result: RunResult = future.result()
        except KilledWorker:
            if self.retry(run, attempt):
                return
            outcome = Outcome(run, "failed", error=f"its worker died {self.deaths.get(run.name, 0)} times"
                              if self.deaths.get(run.name) else "its workers kept dying before it started")
        except Exception as err:  # the task never ran: e.g. a worker without squeezestudy
            outcome = Outcome(run, "failed", error=f"{type(err).__name__}: {err}"[:300])
        else:
            try:
                self.store(run, result)
            except OSError as err:
                result.status, result.error = "failed", f"could not write its results here: {err}"
            outcome = Outcome(run, result.status, result.seconds, result.error)
        outcome.note = self.notes.get(run.name, "")
        self.outcomes[run.name] = outcome
        tail = f"  {outcome.error}" if outcome.error else ""
        done = sum(o.run in self.todo for o in self.outcomes.values())
        self.echo(f"[{done}/{len(self.todo)}] {outcome.status:6s} {run.name} ({outcome.seconds:.0f}s){tail}")

    def retry(self, run: Run, attempt: int) -> bool:
        """A worker died holding `run`: submit it again if it had not started there, or if this
        was the first worker to die running it. The scheduler must not retry by itself (a local
        cluster's does not: allowed-failures 0; docs/batch.md, On a cluster)."""
        self.drain_events()
        ran = run.name in self.started
        self.started.discard(run.name)
        counts = self.deaths if ran else self.requeues
        counts[run.name] = counts.get(run.name, 0) + 1
        if self.deaths.get(run.name, 0) >= ATTEMPTS or self.requeues.get(run.name, 0) > REQUEUES:
            return False
        if ran:
            self.echo(f"retry  {run.name}: its worker died; running it again "
                      f"({self.deaths[run.name] + 1}/{ATTEMPTS})")
            self.notes[run.name] = "retried: its first worker died"
        else:
            self.echo(f"again  {run.name}: its worker died before it started; queued again")
        self.submit(run, attempt + 1)
        return True

    def drain_events(self) -> None:
        while True:
            try:
                _, message = self.events.get_nowait()
            except queue.Empty:
                return
            if message["name"] in self.started:
                continue
            self.started.add(message["name"])
            where = "" if self.target.local else f" on {message['host']} ({message['worker']})"
            gpu = f" on GPU {message['gpu']}" if message.get("gpu") else ""
            self.echo(f"start  {message['name']}{where}{gpu}")

    # --- the loop ---------------------------------------------------------------------------
    def run(self) -> list[Outcome]:
        topic = f"{EVENT_TOPIC}-{self.batch_id}"
        self.client.subscribe_topic(topic, self.events.put)
        try:
            for run in self.todo:  # in manifest order: the scheduler starts them in that order
                if self.after.get(run.name):
                    self.waiting.append(run)
                else:
                    self.submit(run)
            while self.futures:
                for future in [f for f in self.futures if f.done()]:
                    self.finish(future)
                self.drain_events()  # after the ends: the runs that took their workers start after
                self.submit_ready()
                time.sleep(POLL_S)
            self.drain_events()
        except KeyboardInterrupt:
            self.stop()
        finally:
            with contextlib.suppress(Exception):
                self.client.unsubscribe_topic(topic)
        return [self.outcomes[r.name] for r in self.todo]

    def stop(self) -> None:
        """Ctrl-C: cancel what is queued, interrupt what runs (SIGINT to its kernel: training
        keeps its last checkpoint), take back what they hand back, kill what does not stop."""
        from . import batch_task

        previous = signal.signal(signal.SIGINT, lambda *_: self.echo("stopping the batch, please wait..."))
        try:
            self.echo("\ninterrupted: cancelling the queued runs, interrupting the running ones "
                      "(their last checkpoint is kept)")
            self.drain_events()
            queued = [f for f, (run, _) in self.futures.items() if run.name not in self.started]
            self.client.cancel(queued, force=True)
            for future in queued:
                run, _ = self.futures.pop(future)
                self.outcomes[run.name] = Outcome(run, "cancelled")
            deadline = time.monotonic() + STOP_GRACE_S
            killed, next_interrupt = False, 0.0
            while self.futures:
                for future in [f for f in self.futures if f.done()]:
                    self.finish_interrupted(future)
                now = time.monotonic()
                if not killed and now > deadline:
                    with contextlib.suppress(Exception):
                        self.client.run(batch_task.kill_kernels, self.batch_id, wait=True)
                    killed, deadline = True, now + 10
                elif killed and now > deadline:
                    break
                elif not killed and now >= next_interrupt:
                    # again every 2 s: a kernel still starting, or between two cells, ignores it
                    with contextlib.suppress(Exception):
                        self.client.run(batch_task.interrupt_kernels, self.batch_id, wait=True)
                    next_interrupt = now + 2
                time.sleep(POLL_S)
            for run, _ in self.futures.values():
                self.outcomes[run.name] = Outcome(run, "interrupted", error="did not stop in time; killed")
            self.client.cancel(list(self.futures), force=True)
            self.futures.clear()
            for run in self.waiting:
                self.outcomes[run.name] = Outcome(run, "cancelled")
            self.waiting.clear()
        finally:
            signal.signal(signal.SIGINT, previous)

    def finish_interrupted(self, future) -> None:
        run, _ = self.futures.pop(future)
        try:
            result: RunResult = future.result()
            self.store(run, result)
            self.outcomes[run.name] = Outcome(run, result.status, result.seconds, result.error)
        except Exception as err:
            self.outcomes[run.name] = Outcome(run, "interrupted", error=f"{type(err).__name__}: {err}"[:300])
        self.echo(f"stop   {run.name}: {self.outcomes[run.name].status}")


def _with_local_paths(notebook: bytes, run: Run, root: Path) -> bytes:
    """The executed notebook, its papermill paths set to the run's own, relative to the
    repository (the worker ran a copy; no committed file names the folder of a clone)."""
    nb = json.loads(notebook)
    meta = nb.get("metadata", {}).get("papermill")
    if not isinstance(meta, dict):
        return notebook
    meta["input_path"], meta["output_path"] = (notebook_format.relative_path(str(p), root)
                                               for p in (run.notebook, run.output))
    import nbformat

    return nbformat.writes(nbformat.from_dict(nb)).encode("utf-8")


def execute(runs: list[Run], todo: list[Run], env: dict[str, str], kernel: str | None,
            target: ClusterTarget, root: Path, echo) -> list[Outcome]:
    """Execute `todo` (a subset of `runs`, the profile in manifest order) on the cluster."""
    if not todo:
        return []
    if target.local and "OMP_NUM_THREADS" in os.environ and "OMP_NUM_THREADS" not in env:
        env = {**env, "OMP_NUM_THREADS": os.environ["OMP_NUM_THREADS"]}  # this shell's choice
    with connect(target, root, echo) as client:
        echo(_describe(client, target))
        link = _dashboard_link(client)
        if link:
            echo(f"dashboard: {link}")
        return _Batch(client, target, runs, todo, env, kernel, root, echo).run()

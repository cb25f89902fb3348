"""The batch's executor: its runs as Dask tasks on the cluster `cluster.connect` gives.

Each run is one task (`task.run_on_worker`). The client sends the notebook, its
parameters, its environment and the files it reads; it gets back the executed notebook and the
run's result files and writes them here, atomically. A run whose worker dies is submitted once
more (to the workers left, or the one that replaced it), then reported failed. Ctrl-C cancels
the queued runs, interrupts the running kernels, and shuts a local cluster down.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import time
import uuid
from pathlib import Path

from squeezestudy.batch import notebook_format
from squeezestudy.batch.cluster import (
    ClusterTarget,
    connect,
    dashboard_link,
    describe,
)
from squeezestudy.batch.manifest import Outcome, Run
from squeezestudy.batch.task import (
    EVENT_TOPIC,
    MAX_RETURNED_BYTES,
    RunResult,
    RunTask,
    is_scratch,
)
from squeezestudy.core import fileio, lock

ATTEMPTS = 2  # a run whose worker dies while running it is run once more
REQUEUES = 5  # a run whose worker died before it started is submitted again, this many times at most
STOP_GRACE_S = 30  # after Ctrl-C, how long interrupted runs get to hand back their notebook and files
POLL_S = 0.25
WORKER_LOST_S = 60  # a cluster without a worker (or a scheduler) this long: what is left fails


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
            if p.is_file() and not is_scratch(p)
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
        self.unwatched_until = 0.0
        self.alone_since: float | None = None  # when the cluster was last seen without a worker

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
        from squeezestudy.batch.task import run_on_worker

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
        # a run directory brought back from another machine is written under its lock: a run
        # training into it here, or another batch writing it, stops this one (core.lock)
        writing = run.run_dir is not None and result.files and not self.shared
        if writing:
            run.run_dir.mkdir(parents=True, exist_ok=True)  # new here: the run trained elsewhere
        with lock.holding(run.run_dir, "written by a batch", echo=self.echo) if writing \
                else contextlib.nullcontext():
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
            except (OSError, lock.RunLockedError) as err:
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
                self.watch_the_cluster()
                time.sleep(POLL_S)
            self.drain_events()
        except KeyboardInterrupt:
            self.stop()
        finally:
            with contextlib.suppress(Exception):
                self.client.unsubscribe_topic(topic)
        return [self.outcomes[r.name] for r in self.todo]

    def watch_the_cluster(self) -> None:
        """Bound the wait on a cluster that can no longer run anything: no worker for
        WORKER_LOST_S (every worker stopped or terminated), or no scheduler for as long. What is
        left then fails with one line saying why; finished runs are kept."""
        now = time.monotonic()
        if now < self.unwatched_until:
            return
        self.unwatched_until = now + 1.0
        try:
            connected = self.client.status == "running"
            workers = len(self.client.scheduler_info(n_workers=-1)["workers"]) if connected else 0
        except Exception:
            connected, workers = False, 0
        if workers:
            self.alone_since = None
            return
        self.alone_since = self.alone_since or now
        if now - self.alone_since < WORKER_LOST_S:
            return
        why = (f"no worker left on the cluster for {WORKER_LOST_S} s" if connected
               else f"lost the scheduler for {WORKER_LOST_S} s")
        self.echo(f"{why}: the runs not finished fail; start workers and run the batch again "
                  "(finished runs are kept, interrupted ones resume)")
        pending = [run for run, _ in self.futures.values()] + self.waiting
        with contextlib.suppress(Exception):
            self.client.cancel(list(self.futures), force=True)
        self.futures.clear()
        self.waiting.clear()
        for run in pending:
            self.outcomes[run.name] = Outcome(run, "failed", error=why)

    def stop(self) -> None:
        """Ctrl-C: cancel what is queued, interrupt what runs (SIGINT to its kernel: training
        keeps its last checkpoint), take back what they hand back, kill what does not stop."""
        from squeezestudy.batch import task

        def patience(*_) -> None:  # a second Ctrl-C (or SIGTERM) while the batch stops in order
            self.echo("stopping the batch, please wait...")

        previous = {s: signal.signal(s, patience) for s in (signal.SIGINT, signal.SIGTERM)}
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
                        self.client.run(task.kill_kernels, self.batch_id, wait=True)
                    killed, deadline = True, now + 10
                elif killed and now > deadline:
                    break
                elif not killed and now >= next_interrupt:
                    # again every 2 s: a kernel still starting, or between two cells, ignores it
                    with contextlib.suppress(Exception):
                        self.client.run(task.interrupt_kernels, self.batch_id, wait=True)
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
            for s, handler in previous.items():
                signal.signal(s, handler)

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
        echo(describe(client, target))
        link = dashboard_link(client)
        if link:
            echo(f"dashboard: {link}")
        return _Batch(client, target, runs, todo, env, kernel, root, echo).run()

"""What a Dask worker does for one batch run (the client side is `batch.execute`).

A worker executes the run's notebook with papermill in its own checkout of the project
(the root of the installed `squeezestudy`, or $SQUEEZESTUDY_BATCH_ROOT), with the run's
environment, and hands back the executed notebook and the run's result files: no
filesystem is shared with the client. When the worker's checkout *is* the client's (same
host, same directory: a local cluster), the files are already in place and only the
notebook travels.

The kernels a worker starts are registered by batch, so that the client can interrupt them
(Ctrl-C: their last checkpoint is kept) and, if they do not stop, kill them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from squeezestudy.core import paths
from squeezestudy.core.lock import LOCK

ROOT_ENV = "SQUEEZESTUDY_BATCH_ROOT"
# Result files larger than this stay on the worker (a large model's checkpoint): they would
# go through the scheduler in one message.
MAX_RETURNED_BYTES = 64 * 2**20
EVENT_TOPIC = "squeezestudy-batch"


@dataclass
class RunTask:
    """One run, as the client sends it. Paths are relative to the project root, POSIX style."""

    batch_id: str
    name: str
    notebook_path: str
    notebook: bytes  # the client's copy, the one its parameters were checked against
    parameters: dict
    env: dict[str, str]
    kernel: str | None
    run_dir: str | None  # a training run's directory: all its files come back
    exclude: tuple[str, ...] = ()  # paths other runs may be writing meanwhile: not this run's
    inputs: dict[str, bytes] = field(default_factory=dict)  # files the worker's tree must hold
    client_host: str = ""
    client_root: str = ""
    host_threads: dict[str, int] = field(default_factory=dict)  # host -> worker threads there


@dataclass
class RunResult:
    status: str  # ok, failed, interrupted, cancelled
    seconds: float = 0.0
    error: str = ""
    notebook: bytes | None = None  # the executed (or partly executed) notebook
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # path -> (content, mtime_ns)
    left_on_worker: list[str] = field(default_factory=list)
    host: str = ""


@dataclass
class _Kernel:
    pid: int
    pgid: int
    interrupted: bool = False


_LOCK = threading.Lock()
_KERNELS: dict[str, dict[str, _Kernel]] = {}  # batch id -> run name -> its kernel
_STOPPED: set[str] = set()  # batches interrupted: their runs that start late do nothing


def worker_root() -> Path:
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).resolve()
    return paths.REPO_ROOT


def run_on_worker(task: RunTask) -> RunResult:
    """The Dask task: execute one notebook here and return what the client must write."""
    root = worker_root()
    host = socket.gethostname()
    if task.batch_id in _STOPPED:
        return RunResult("cancelled", host=host)
    address = _worker_address()
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
    _announce(task.batch_id, {"name": task.name, "host": host, "worker": address, "gpu": gpu})
    shared = host == task.client_host and str(root) == task.client_root
    if not shared:
        _write_inputs(root, task.inputs)
    outputs = root / "outputs"
    before = _snapshot(outputs) if not shared and task.run_dir is None else {}
    cwd = root / Path(task.notebook_path).parent
    cwd.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    status, error = "ok", ""
    with tempfile.TemporaryDirectory(prefix="squeezestudy-") as tmp:
        source = Path(tmp) / Path(task.notebook_path).name
        executed = Path(tmp) / "executed.ipynb"
        source.write_bytes(task.notebook)
        try:
            import papermill

            papermill.execute_notebook(
                str(source), str(executed), parameters=task.parameters, cwd=str(cwd),
                kernel_name=task.kernel, progress_bar=False, log_output=False,
                request_save_on_cell_execute=True,
                kernel_manager_class=_kernel_manager(task.batch_id, task.name, _kernel_env(task, address)))
        except Exception as err:
            status, error = "failed", _one_line(err)
        finally:
            with _LOCK:
                kernel = _KERNELS.get(task.batch_id, {}).pop(task.name, None)
        if kernel is not None and kernel.interrupted:
            status, error = "interrupted", "interrupted (Ctrl-C); its last checkpoint is kept"
        notebook = executed.read_bytes() if executed.is_file() else None
    seconds = time.perf_counter() - start
    if shared:
        return RunResult(status, seconds, error, notebook, host=host)
    files, left = _collect(root, task, before)
    return RunResult(status, seconds, error, notebook, files, left, host)


def _one_line(err: Exception) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(err).__name__)[:300]


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except ValueError:  # called outside a worker (tests)
        return ""


def _announce(batch_id: str, message: dict) -> None:
    """Tell the client a run started (its progress line), through the scheduler's events."""
    try:
        from distributed import get_worker

        get_worker().log_event(f"{EVENT_TOPIC}-{batch_id}", message)
    except ValueError:
        pass


def usable_cores() -> int:
    """The cores this process may run on (a SLURM job's or a container's share, not the host's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _kernel_env(task: RunTask, address: str) -> dict[str, str]:
    """The run's environment on top of the worker's: the profile's variables and, unless the
    client sent it, OMP_NUM_THREADS sharing this host's cores among the worker threads there
    (one run a thread). The worker's own OMP_NUM_THREADS is not the run's: a Dask nanny sets
    it to 1 for the worker's threads."""
    env = dict(task.env)
    if "OMP_NUM_THREADS" not in env:
        host = address.split("://")[-1].rsplit(":", 1)[0]
        sharing = max(1, task.host_threads.get(host, 1))
        env["OMP_NUM_THREADS"] = str(max(1, usable_cores() // sharing))
    return env


def _kernel_manager(batch_id: str, name: str, env: dict[str, str]):
    """A kernel manager whose kernel starts with `env` added to this process's environment
    (the worker's own is never changed) and is registered for interrupts."""
    from jupyter_client.manager import AsyncKernelManager

    class KernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            kw["env"] = {**os.environ, **kw.get("env", {}), **env}
            # a caller's MPLBACKEND=Agg would leave the executed notebooks without figures
            kw["env"].pop("MPLBACKEND", None)
            await super().start_kernel(**kw)
            pid = getattr(self.provisioner, "pid", None)
            if pid is None:
                return
            pgid = getattr(self.provisioner, "pgid", None) or pid
            with _LOCK:
                _KERNELS.setdefault(batch_id, {})[name] = _Kernel(pid, pgid)
                stopped = batch_id in _STOPPED
            if stopped:  # interrupted while this kernel was starting
                interrupt_kernels(batch_id)

    return KernelManager


def interrupt_kernels(batch_id: str) -> list[str]:
    """SIGINT to the kernels of a batch (run through `Client.run` on every worker): the running
    cell stops, training keeps its last checkpoint. Runs that start later do nothing."""
    return _signal_kernels(batch_id, signal.SIGINT)


def kill_kernels(batch_id: str) -> list[str]:
    """SIGKILL to the kernels of a batch that are still there after an interrupt."""
    return _signal_kernels(batch_id, signal.SIGKILL)


def _signal_kernels(batch_id: str, signum: int) -> list[str]:
    """Mark the batch stopped and send `signum` to each of its kernels; their run names."""
    with _LOCK:
        _STOPPED.add(batch_id)
        kernels = list(_KERNELS.get(batch_id, {}).items())
    for _, kernel in kernels:
        kernel.interrupted = True
        _signal_group(kernel, signum)
    return [name for name, _ in kernels]


def _signal_group(kernel: _Kernel, signum: int) -> None:
    try:  # jupyter_client starts each kernel in its own session: its whole group gets it
        os.killpg(kernel.pgid, signum)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(kernel.pid, signum)


def _write_inputs(root: Path, inputs: dict[str, bytes]) -> None:
    """Bring the files the run reads to the client's version. A weights file (*.pt) the worker
    already has is kept: it is this worker's own checkpoint of the run, never older."""
    from squeezestudy.core import fileio

    for relative, content in inputs.items():
        path = root / relative
        if path.suffix == ".pt" and path.is_file():
            continue
        if path.is_file() and path.stat().st_size == len(content) and path.read_bytes() == content:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        fileio.write_bytes(path, content)


def is_scratch(path: Path) -> bool:
    """fileio's unfinished writes, and a run directory's lock (core.lock): never results."""
    return (path.name.startswith(".") and path.name.endswith(".tmp")) or path.name == LOCK


def _snapshot(directory: Path) -> dict[Path, tuple[int, int]]:
    if not directory.is_dir():
        return {}
    stamps = {}
    for path in directory.rglob("*"):
        with contextlib.suppress(FileNotFoundError):  # replaced meanwhile: its new copy is seen
            if path.is_file() and not is_scratch(path):
                st = path.stat()
                stamps[path] = (st.st_mtime_ns, st.st_size)
    return stamps


def _collect(root: Path, task: RunTask, before: dict[Path, tuple[int, int]]
             ) -> tuple[dict[str, tuple[bytes, int]], list[str]]:
    """A training run: every file of its run directory. Any other run: the files under
    outputs/ it created or changed, less those other runs may be writing meanwhile."""
    if task.run_dir is not None:
        run_dir = root / task.run_dir
        candidates = [p for p in run_dir.rglob("*") if p.is_file() and not is_scratch(p)] \
            if run_dir.is_dir() else []
    else:
        after = _snapshot(root / "outputs")
        excluded = [root / e for e in task.exclude]
        candidates = [p for p, stamp in after.items() if before.get(p) != stamp
                      and not any(p == e or e in p.parents for e in excluded)]
    files, left = {}, []
    for path in sorted(candidates):
        relative = path.relative_to(root).as_posix()
        try:
            st = path.stat()
            if st.st_size > MAX_RETURNED_BYTES:
                left.append(f"{relative} ({st.st_size / 2**20:.0f} MB)")
                continue
            files[relative] = (path.read_bytes(), st.st_mtime_ns)
        except FileNotFoundError:  # replaced or removed meanwhile
            continue
    return files, left

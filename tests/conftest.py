from __future__ import annotations

import gzip
import os
import signal
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest

# Tests must not see this machine's tuning cache (squeezestudy tune): fit's defaults stay static.
os.environ["SQUEEZESTUDY_TUNING"] = str(Path(tempfile.mkdtemp(prefix="squeezestudy-tests-")) / "tuning.json")



def default_sigint() -> None:
    """preexec_fn for a child the tests interrupt: SIGINT at its default, as a terminal delivers
    it. A shell that starts the tests in the background (`... &`) leaves SIGINT ignored, which
    children inherit, and the interrupted child would then never stop."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


SHARED_COPY = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "fashion-mnist"


def write_idx(path: Path, array: np.ndarray, magic: bytes | None = None) -> Path:
    """Write a uint8 array as an IDX file (gzipped when the name ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = magic if magic is not None else bytes([0, 0, 8, array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


def write_dataset(directory: Path, n_train: int = 60_000, n_test: int = 10_000,
                  gz: bool = True, seed: int = 0) -> Path:
    """A synthetic Fashion-MNIST-shaped data set (right counts, random pixels)."""
    rng = np.random.default_rng(seed)
    ext = ".gz" if gz else ""
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 28, 28)))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{ext}", np.arange(n) % 10)
    return directory


@pytest.fixture(scope="session")
def fashion_mnist():
    """The real data set: $FASHION_MNIST_DIR, the shared offline copy, or the default location."""
    from squeezestudy.data import fashion_mnist as data

    directory = os.environ.get(data.ENV_VAR) or (SHARED_COPY if SHARED_COPY.is_dir() else None)
    try:
        return data.load(directory, download=False)
    except data.DataNotFoundError as err:
        pytest.skip(f"real Fashion-MNIST not available: {err}")


@pytest.fixture(scope="session")
def small_fashion_mnist(fashion_mnist):
    """2,000 training images (200 per class) with the real validation and test splits."""
    from squeezestudy.data.fashion_mnist import FashionMNIST

    return FashionMNIST(fashion_mnist.train.subset(2000), fashion_mnist.val.subset(1000),
                        fashion_mnist.test.subset(1000), fashion_mnist.source)


@pytest.fixture(params=["here", "avx2", "avx512", "avx512_bf16", "amx"])
def cpu_kind(request):
    """Each CPU kind the project's machines have, by simulation (decisions only: the kernels stay
    this CPU's), and this machine as it is ("here"). Yields the Machine decisions are made for."""
    from squeezestudy.core import machine

    if request.param == "here":
        yield machine.current()
    else:
        with machine.simulate(request.param) as simulated:
            yield simulated


@pytest.fixture
def interrupted_fit(monkeypatch):
    """fit(...) stopped by Ctrl-C at its n-th evaluation (validation and test count one each; a
    sealed run evaluates validation only): `interrupted_fit(n, config, data, out_dir)`. The
    run's checkpoint of the epochs before stays on disk, for a resume."""
    from squeezestudy.training import loop as train_module

    def run(n: int, *args, **kwargs) -> None:
        real, calls = train_module.evaluate, []

        def interrupting(*a, **kw):
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
            return real(*a, **kw)

        monkeypatch.setattr(train_module, "evaluate", interrupting)
        try:
            with pytest.raises(KeyboardInterrupt):
                train_module.fit(*args, quiet=True, **kwargs)
        finally:
            monkeypatch.setattr(train_module, "evaluate", real)
    return run

import gzip
import struct

import numpy as np
import pytest
import torch

from squeezestudy.data import fashion_mnist as data
from squeezestudy.data.idx import IdxError, read_idx, verify_checksums

from .conftest import write_dataset, write_idx


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_reads_plain_and_gzipped(tmp_path, name):
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4) % 256
    out = read_idx(write_idx(tmp_path / name, array), expected_ndim=3)
    assert out.dtype == torch.uint8
    assert torch.equal(out, torch.from_numpy(array.astype(np.uint8)))


def test_truncated_file_names_file_and_sizes(tmp_path):
    path = write_idx(tmp_path / "t-idx3-ubyte", np.zeros((5, 28, 28)))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IdxError, match=r"t-idx3-ubyte: truncated.*3,920 bytes.*3,820"):
        read_idx(path)


def test_trailing_bytes_rejected(tmp_path):
    path = write_idx(tmp_path / "t-idx1-ubyte", np.zeros(5))
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(IdxError, match="trailing bytes"):
        read_idx(path)


def test_wrong_magic(tmp_path):
    path = write_idx(tmp_path / "m-idx1-ubyte", np.zeros(5), magic=bytes([0, 0, 0x0D, 1]))
    with pytest.raises(IdxError, match="bad magic number 0x00000d01"):
        read_idx(path)


def test_wrong_dimensions(tmp_path):
    path = write_idx(tmp_path / "d-idx1-ubyte", np.zeros(5))
    with pytest.raises(IdxError, match="1 dimensions in the header, expected 3"):
        read_idx(path, expected_ndim=3)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "c-idx1-ubyte.gz"
    payload = gzip.compress(b"\0\0\x08\x01" + b"\0\0\0\x05" + bytes(5))
    path.write_bytes(payload[:-12])
    with pytest.raises(IdxError, match="c-idx1-ubyte.gz: cannot be read"):
        read_idx(path)


def test_mismatched_images_and_labels(tmp_path):
    directory = write_dataset(tmp_path, n_train=60_000, n_test=10_000, gz=False)
    write_idx(directory / "t10k-labels-idx1-ubyte", np.arange(9_999) % 10)
    with pytest.raises(IdxError, match="10,000 images but .*9,999 labels"):
        data.load(directory)


def test_label_out_of_range(tmp_path):
    directory = write_dataset(tmp_path, gz=True)
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", np.full(10_000, 10))
    with pytest.raises(IdxError, match=r"label 10 outside 0..9"):
        data.load(directory)


def test_wrong_count_for_split(tmp_path):
    directory = write_dataset(tmp_path, n_test=100)
    with pytest.raises(IdxError, match="100 items, the test split has 10,000"):
        data.load(directory)


def test_loads_synthetic_plain_files(tmp_path):
    ds = data.load(write_dataset(tmp_path, gz=False))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (55_000, 5_000, 10_000)
    assert ds.verified == ()


def test_checksum_mismatch_is_an_error(tmp_path):
    directory = write_dataset(tmp_path)
    (directory / "SHA256SUMS").write_text("0" * 64 + "  train-labels-idx1-ubyte.gz\n")
    with pytest.raises(IdxError, match="SHA-256 .* does not match"):
        data.load(directory)
    assert verify_checksums(tmp_path / "nowhere", ["x"]) == []


def test_missing_files_message_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    with pytest.raises(data.DataNotFoundError) as err:
        data.load(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and data.ENV_VAR in message and str(data.RAW_DIR) in message


def test_env_var_pointing_nowhere(tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(data.DataNotFoundError, match=r"\$FASHION_MNIST_DIR"):
        data.locate()


def test_no_network_no_files(tmp_path, monkeypatch):
    """Offline with nothing on disk: one clear error, not a traceback from urllib."""
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setattr(data, "RAW_DIR", tmp_path / "FashionMNIST" / "raw")

    import torchvision.datasets

    class Offline:
        def __init__(self, *args, **kwargs):
            raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", Offline)
    with pytest.raises(data.DataNotFoundError, match="Download failed: network unreachable"):
        data.locate()
    with pytest.raises(data.DataNotFoundError, match="FASHION_MNIST_DIR"):
        data.locate(download=False)


def test_corrupt_deflate_stream_is_an_idx_error(tmp_path):
    """Found by the property test in test_faults.py: a flipped bit inside the deflate data
    raised zlib.error instead of IdxError."""
    path = write_idx(tmp_path / "z-idx1-ubyte.gz", np.arange(200) % 7)
    raw = bytearray(path.read_bytes())
    for position in range(12, len(raw) - 8):
        flipped = bytearray(raw)
        flipped[position] ^= 0x01
        path.write_bytes(bytes(flipped))
        try:
            read_idx(path, expected_ndim=1)
        except IdxError as err:
            assert str(path) in str(err)


def test_header_with_a_zero_dimension_holds_no_data(tmp_path):
    path = tmp_path / "e-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 0, 28, 28))
    with pytest.raises(IdxError, match=r"shape \(0, 28, 28\), which holds no data"):
        read_idx(path)


def test_huge_header_shape_does_not_overflow(tmp_path):
    path = tmp_path / "h-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1) + bytes(8))
    with pytest.raises(IdxError, match="truncated"):
        read_idx(path)

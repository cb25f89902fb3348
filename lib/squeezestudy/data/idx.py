"""Reader for the IDX format of (Fashion-)MNIST, with every header field checked.

Layout (big-endian): two zero bytes, a type code (0x08 = uint8), the number of
dimensions, one uint32 per dimension, then the data. A short, padded or
mislabelled file raises `IdxError` naming the file; nothing is loaded partially.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

UINT8_TYPE_CODE = 0x08


class IdxError(ValueError):
    """An IDX file that cannot be read as what it claims to be."""


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
        raise IdxError(f"{path}: cannot be read ({err}); replace the file with a fresh copy") from err


def read_idx(path: str | Path, expected_ndim: int | None = None) -> torch.Tensor:
    """Read one uint8 IDX file (plain or gzipped) into a uint8 tensor."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise IdxError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    zero, type_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or type_code != UINT8_TYPE_CODE:
        raise IdxError(
            f"{path}: bad magic number 0x{raw[:4].hex()} (expected 0x000008NN for uint8 IDX); "
            "this is not an IDX file of unsigned bytes"
        )
    if expected_ndim is not None and ndim != expected_ndim:
        raise IdxError(f"{path}: {ndim} dimensions in the header, expected {expected_ndim}")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise IdxError(f"{path}: header cut short ({len(raw)} bytes)")
    shape = struct.unpack(f">{ndim}I", raw[4:header_len])
    if ndim == 0 or 0 in shape:
        raise IdxError(f"{path}: header says shape {tuple(shape)}, which holds no data")
    expected = math.prod(shape)  # exact: a corrupt header can overflow 64 bits
    actual = len(raw) - header_len
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise IdxError(
            f"{path}: {what}: header says shape {tuple(shape)} = {expected:,} bytes, "
            f"file holds {actual:,}"
        )
    data = np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape)
    return torch.from_numpy(data.copy())


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checksums(directory: Path, names: list[str]) -> list[str]:
    """Check `names` against a SHA256SUMS file in `directory`, if there is one.

    Returns the names that were verified; raises IdxError on a mismatch.
    """
    sums_file = directory / "SHA256SUMS"
    if not sums_file.is_file():
        return []
    try:
        lines = sums_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise IdxError(f"{sums_file}: cannot be read ({err}); fix it or delete it") from None
    listed = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 2:
            listed[parts[1].lstrip("*")] = parts[0].lower()
    verified = []
    for name in names:
        if name in listed:
            try:
                actual = sha256(directory / name)
            except OSError as err:
                raise IdxError(f"{directory / name}: cannot be read ({err}); replace the file "
                               "with a fresh copy") from None
            if actual != listed[name]:
                raise IdxError(
                    f"{directory / name}: SHA-256 {actual} does not match {sums_file} "
                    f"({listed[name]}); the file is corrupt or not the listed one"
                )
            verified.append(name)
    return verified

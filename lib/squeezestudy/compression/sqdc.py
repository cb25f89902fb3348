"""The study's Deep Compression file (.sqdc): what `deep_compression` writes and reads back.

Layout: the magic line, a little-endian uint32 header length, a JSON header (the architecture to
build, and per compressed layer its shape, cluster count and the byte lengths of its parts), then
per layer the fp32 centroids, the Huffman code lengths of the cluster indices and of the position
gaps, the two Huffman streams, and finally every other parameter (biases) as fp32. A layer that
keeps every weight (`"dense": true` in the header) has no position stream: its gaps would all be
1, a bit a weight for nothing; its parts are the centroids, the index code lengths and the index
stream.

`load(path, expect=...)` checks the file against what was recorded when it was written (its
size and SHA-256 in the compression's record, the architecture it must hold) before decoding it:
a file changed or damaged since, or another model's file under this name, is an error naming it.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from squeezestudy.compression import huffman
from squeezestudy.core import fileio

MAGIC = b"SQDC1\n"
GAP_BITS = 8  # relative index width: gaps up to 255, longer ones bridged by fillers


class CompressedFileError(ValueError):
    """A Deep Compression file that cannot be read."""


def _gaps_with_fillers(mask: torch.Tensor, assign: torch.Tensor,
                       filler: int) -> tuple[np.ndarray, np.ndarray]:
    """Relative positions of the surviving weights, each gap < 2^GAP_BITS, and their cluster
    indices; a longer gap gets filler entries (cluster index `filler`, a zero weight)."""
    positions = np.flatnonzero(mask.flatten().numpy())
    gaps, symbols, previous = [], [], -1
    largest = 2**GAP_BITS - 1
    for position, cluster in zip(positions.tolist(), assign.tolist(), strict=True):
        gap = position - previous
        while gap > largest:
            gaps.append(largest)
            symbols.append(filler)
            gap -= largest
        gaps.append(gap)
        symbols.append(cluster)
        previous = position
    return np.array(gaps, dtype=np.int64), np.array(symbols, dtype=np.int64)


def save(path: str | Path, model: nn.Module, shared: dict, arch: dict) -> int:
    """Write the compressed model; `shared`: layer name -> deep_compression.SharedLayer (mask,
    cluster assignment, centroids); `arch` ({"model": name, "kwargs": {...}}) is what `load` builds.
    Returns the file's size in bytes."""
    header = {"arch": arch, "gap_bits": GAP_BITS, "layers": [], "biases": []}
    payload = bytearray()
    for name, layer in shared.items():
        k = len(layer.centroids)
        dense = bool(layer.mask.all())
        gaps, symbols = _gaps_with_fillers(layer.mask, layer.assign, filler=k)
        index_lengths = huffman.code_lengths(symbols, k + 1)
        centroids = layer.centroids.detach().numpy().astype("<f4").tobytes()
        if dense:
            parts = [centroids, index_lengths.tobytes(), huffman.encode(symbols, index_lengths)]
        else:
            gap_lengths = huffman.code_lengths(gaps, 2**GAP_BITS)
            parts = [centroids, index_lengths.tobytes(), gap_lengths.tobytes(),
                     huffman.encode(symbols, index_lengths), huffman.encode(gaps, gap_lengths)]
        header["layers"].append({"name": name, "shape": list(layer.mask.shape), "k": k,
                                 "entries": len(symbols), "bytes": [len(p) for p in parts],
                                 **({"dense": True} if dense else {})})
        for part in parts:
            payload += part
    tensors = dict(model.named_parameters())
    for name, p in tensors.items():
        if name not in shared:
            data = p.detach().cpu().numpy().astype("<f4").tobytes()
            header["biases"].append({"name": name, "shape": list(p.shape), "bytes": len(data)})
            payload += data
    head = json.dumps(header, separators=(",", ":")).encode()
    fileio.write_bytes(path, MAGIC + struct.pack("<I", len(head)) + head + bytes(payload))
    return Path(path).stat().st_size


def expectation(record: dict) -> dict:
    """What a compression's record (`<name>.json`) says its file is: size, SHA-256, model."""
    return {"bytes": record["file_bytes"], "sha256": record.get("file_sha256"), "model": record["model"]}


def _unexpected(path: Path, raw: bytes, expect: dict) -> str | None:
    if expect.get("bytes") is not None and len(raw) != expect["bytes"]:
        return f"it is {len(raw):,} bytes, its record says {expect['bytes']:,}"
    if expect.get("sha256") and hashlib.sha256(raw).hexdigest() != expect["sha256"]:
        return "its SHA-256 is not the one recorded when it was written"
    return None


def load(path: str | Path, build: Callable[..., nn.Module] | None = None,
         expect: dict | None = None) -> nn.Module:
    """The model stored at `path`, in eval mode, with its pruned and shared weights. `expect`
    (see `expectation`): the size, SHA-256 and model the file must have, checked first."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CompressedFileError(f"{path}: no such file; write it with deep_compression.save") from None
    problem = _unexpected(path, raw, expect or {})
    if problem:
        raise CompressedFileError(f"{path}: not the file that was recorded ({problem}): changed or damaged "
                                  "since; restore it from git (git checkout -- PATH) or compress again "
                                  "(`squeezestudy deep-compression`)")
    try:
        if not raw.startswith(MAGIC):
            raise ValueError("not a Deep Compression file (wrong magic)")
        (size,) = struct.unpack_from("<I", raw, len(MAGIC))
        start = len(MAGIC) + 4
        header = json.loads(raw[start:start + size])
        offset = start + size
        if build is None:
            from squeezestudy.models import build as build_model

            build = build_model
        if expect and expect.get("model") and header["arch"]["model"] != expect["model"]:
            raise CompressedFileError(f"{path}: holds a {header['arch']['model']}, not the "
                                      f"{expect['model']} its record names; compress that model again")
        model = build(header["arch"]["model"], **header["arch"]["kwargs"])
        state = {}
        for layer in header["layers"]:
            parts = []
            for n in layer["bytes"]:
                if offset + n > len(raw):
                    raise ValueError("file ends early (truncated)")
                parts.append(raw[offset:offset + n])
                offset += n
            k, size = layer["k"], int(np.prod(layer["shape"]))
            centroids = np.frombuffer(parts[0], dtype="<f4")
            index_lengths = np.frombuffer(parts[1], dtype=np.uint8)
            if layer.get("dense"):  # every weight kept: no position stream
                if len(parts) != 3 or layer["entries"] != size:
                    raise ValueError(f"dense layer {layer['name']} has {len(parts)} parts and "
                                     f"{layer['entries']} entries for {size} weights")
                symbols = huffman.decode(parts[2], index_lengths, size)
                positions = np.arange(size)
            else:
                gap_lengths = np.frombuffer(parts[2], dtype=np.uint8)
                symbols = huffman.decode(parts[3], index_lengths, layer["entries"])
                gaps = huffman.decode(parts[4], gap_lengths, layer["entries"])
                positions = np.cumsum(gaps) - 1
            weight = np.zeros(size, dtype=np.float32)
            real = symbols < k
            weight[positions[real]] = centroids[symbols[real]]
            state[layer["name"]] = torch.from_numpy(weight.reshape(layer["shape"]))
        for bias in header["biases"]:
            data = raw[offset:offset + bias["bytes"]]
            if len(data) != bias["bytes"]:
                raise ValueError("file ends early (truncated)")
            offset += bias["bytes"]
            values = np.frombuffer(data, dtype="<f4").copy()
            state[bias["name"]] = torch.from_numpy(values).reshape(bias["shape"])
        if offset != len(raw):
            raise ValueError(f"{len(raw) - offset} bytes after the last tensor")
        model.load_state_dict(state)
    except CompressedFileError:
        raise
    except (ValueError, KeyError, IndexError, struct.error, json.JSONDecodeError, RuntimeError) as err:
        raise CompressedFileError(f"{path}: cannot read it as a Deep Compression file ({err}); "
                                  "write it again with deep_compression.save") from None
    return model.eval()


def header_of(raw: bytes) -> dict:
    """The JSON header of a file's bytes."""
    (size,) = struct.unpack_from("<I", raw, len(MAGIC))
    return json.loads(raw[len(MAGIC) + 4:len(MAGIC) + 4 + size])


def repack(path: str | Path, out: str | Path, expect: dict | None = None) -> int:
    """Write the file at `path` again, at `out`, in the current layout: the same weights (each
    layer's shared values and their assignment read back from the file), layers that keep every
    weight without their position stream. Returns the new size; the weights are checked equal."""
    from types import SimpleNamespace  # a layer as `save` reads it: centroids, assign, mask

    raw = Path(path).read_bytes()
    header = header_of(raw)
    model = load(path, expect=expect)
    params = dict(model.named_parameters())
    shared = {}
    for layer in header["layers"]:
        weight = params[layer["name"]].detach()
        mask = weight != 0 if not layer.get("dense") and layer["entries"] < weight.numel() \
            else torch.ones_like(weight, dtype=torch.bool)
        centroids, assign = torch.unique(weight[mask], return_inverse=True)
        shared[layer["name"]] = SimpleNamespace(centroids=centroids, assign=assign, mask=mask)
    size = save(out, model, shared, header["arch"])
    again = load(out)
    if any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(),
                                                 strict=True)):
        raise CompressedFileError(f"{path}: repacked, its weights changed; the file at {out} is wrong")
    return size

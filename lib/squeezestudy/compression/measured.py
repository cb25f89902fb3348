"""Numbers that depend on the machine that computed them, recorded once where they were measured
and read back everywhere else.

int8 inference is the one such number in the study: fbgemm's int8 kernels round differently on
AVX2 and on AVX-512 CPUs, so the same int8 model scores 0.9074 on one machine and 0.9079 on
another (at 1 and at 2 threads alike: outputs/logs/int8-by-cpu-2026-12-06.log). Re-executing a
notebook must not rewrite a committed result with another machine's rounding, so `recorded` keeps
each such result in outputs/measured/int8.json with the fingerprint of what it was computed from
(the fp32 weights' SHA-256 and the data it was evaluated on) and the machine that computed it.
While the fingerprint matches, the record is read back; a changed input (new weights) measures
again and replaces it. To measure on this machine anyway: SQUEEZESTUDY_REMEASURE=1. Smoke runs
(CI's nbval) never write the committed records.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from squeezestudy.core import fileio, machine
from squeezestudy.core.paths import OUTPUTS, smoke_mode

RECORDS = OUTPUTS / "measured" / "int8.json"
REMEASURE_ENV = "SQUEEZESTUDY_REMEASURE"


def _remeasure() -> bool:
    return os.environ.get(REMEASURE_ENV, "") not in ("", "0", "false")


def read_records(path: str | Path = RECORDS) -> dict:
    path = Path(path)
    if not path.exists():
        return {}
    try:
        records = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); restore it with `git checkout -- {path}` "
                         f"or delete it to measure every int8 result again on this machine") from err
    if not isinstance(records, dict):
        raise ValueError(f"{path} should hold an object of records; restore it with git checkout")
    return records


def recorded(key: str, fingerprint: dict, compute: Callable[[], dict],
             path: str | Path | None = None) -> dict:
    """The result `compute()` gave for `key` (a dict of JSON numbers), read back from the record
    when one with the same `fingerprint` exists, else computed now and recorded with this machine."""
    path = Path(path) if path is not None else RECORDS
    records = read_records(path)
    entry = records.get(key)
    if entry and entry.get("fingerprint") == fingerprint and not _remeasure():
        return entry["result"]
    result = compute()
    if not smoke_mode():
        records[key] = {"fingerprint": fingerprint, "result": result,
                        "machine": machine.current().describe(),
                        "measured_on": time.strftime("%Y-%m-%d")}
        path.parent.mkdir(parents=True, exist_ok=True)
        fileio.write_text(path, json.dumps(records, indent=1, sort_keys=True) + "\n")
    return result


def state_sha256(model) -> str:
    """SHA-256 of a model's parameters and buffers (names, shapes, fp32 values), in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(value.shape)}:{value.dtype}".encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def batches_sha256(batches) -> str:
    """SHA-256 of what a `data.Batches` yields, as far as the order is fixed: images, labels,
    batch size and normalisation (a shuffled or augmented loader has no fixed fingerprint)."""
    if batches.shuffle or batches.augment:
        raise ValueError("a shuffled or augmented loader changes from pass to pass: fingerprint "
                         "the fixed-order loader the result is computed on")
    digest = hashlib.sha256()
    digest.update(f"{batches.batch_size}:{batches.mean!r}:{batches.std!r}:{batches.image_size}".encode())
    digest.update(batches.images.cpu().contiguous().numpy().tobytes())
    digest.update(batches.labels.cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def int8_fingerprint(fp32_model, test, calibration, calibration_batches: int) -> dict:
    """What an int8 result is computed from: the fp32 weights, the test and calibration images."""
    return {"fp32_state_sha256": state_sha256(fp32_model), "test_sha256": batches_sha256(test),
            "calibration_sha256": batches_sha256(calibration),
            "calibration_batches": calibration_batches, "engine": machine.QUANTIZED_ENGINE}

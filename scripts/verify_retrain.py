"""Check that retrained runs reproduce their committed results, to keep their weights.

The runs committed before weights were kept (outputs/weights) were trained again in a checkout
of the commit that holds their results; this compares each retrained run directory with that
commit's version of it: every number of history.csv except the timings, the arrays of
predictions.npz, and metrics.json except its bookkeeping (timings, machine, date, file hashes).
A run is REPRODUCED when all of them match exactly; a setting the old run did not record (for
example micro_batch 0, absent or None before) is listed, not counted as a difference.

    python scripts/verify_retrain.py [--rev HEAD] [--root .] RUN...
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

TIMING_COLUMNS = {"train_s", "eval_s", "images_per_s"}
# Timings, the machine, when it finished, and the hashes of files holding timings.
BOOKKEEPING_KEYS = {"train_time_s", "images_per_s", "device", "device_name", "finished_at", "files"}


def committed(root: Path, rev: str, path: str) -> bytes:
    return subprocess.run(["git", "-C", str(root), "show", f"{rev}:{path}"],
                          check=True, capture_output=True).stdout


def compare(root: Path, rev: str, run: str) -> tuple[bool, list[str]]:
    base = f"outputs/runs/{run}"
    notes: list[str] = []
    old_hist = pd.read_csv(io.BytesIO(committed(root, rev, f"{base}/history.csv")))
    new_hist = pd.read_csv(root / base / "history.csv")
    cols = [c for c in old_hist.columns if c not in TIMING_COLUMNS]
    same = old_hist.shape == new_hist.shape and old_hist[cols].equals(new_hist[cols])
    if not same:
        notes.append(f"history differs ({len(old_hist)} vs {len(new_hist)} epochs)")
    old_pred = np.load(io.BytesIO(committed(root, rev, f"{base}/predictions.npz")))
    new_pred = np.load(root / base / "predictions.npz")
    if sorted(old_pred.files) != sorted(new_pred.files) or any(
            not np.array_equal(old_pred[k], new_pred[k]) for k in old_pred.files):
        same = False
        notes.append("predictions differ")
    old_m = json.loads(committed(root, rev, f"{base}/metrics.json"))
    new_m = json.loads((root / base / "metrics.json").read_text())
    for key in sorted(set(old_m) | set(new_m)):
        if key in BOOKKEEPING_KEYS or key == "config" or old_m.get(key) == new_m.get(key):
            continue
        if old_m.get(key) is not None:
            same = False
        notes.append(f"metrics {key}: {old_m.get(key, '(absent)')!r} -> "
                     f"{new_m.get(key, '(absent)')!r}")
    old_c, new_c = old_m.get("config", {}), new_m.get("config", {})
    for key in sorted(set(old_c) | set(new_c)):
        if old_c.get(key) != new_c.get(key):
            same = same and key not in old_c  # a recorded setting that changed is a difference
            notes.append(f"config {key}: {old_c.get(key, '(absent)')!r} -> "
                         f"{new_c.get(key, '(absent)')!r}")
    return same, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--rev", default="HEAD", help="the commit holding the original results")
    parser.add_argument("--root", type=Path, default=Path("."), help="the checkout retrained in")
    args = parser.parse_args(argv)
    failed = 0
    for run in args.runs:
        same, notes = compare(args.root, args.rev, run)
        failed += not same
        print(f"{'REPRODUCED' if same else 'DIFFERS':10s} {run}" + "".join(f"\n    {n}" for n in notes))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Per-layer sparsity from a sensitivity scan (Han et al., 2015, section 4.2 and figure 5).

Each compressed layer is pruned alone to each share of `SCAN_DENSITIES`, the rest of the network
left as trained, and the validation accuracy measured without retraining (`scan`). A tolerance
then sets every layer's share: the smallest share whose accuracy drop, that layer alone, is
within the tolerance (`shares_for`). `allocate` picks the smallest tolerance whose file, written
without retraining (`dry_bytes`: pruned, shared, Huffman-coded), is at most a byte target; the
retraining that follows changes the shared values, not which weights survive or their clusters,
so the file it writes is within a few hundred bytes of that size. `uniform_share` finds the one
share for every layer that gives the same size: the control a per-layer allocation is compared to.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import pandas as pd
from torch import nn

from squeezestudy.compression import deep_compression as dc
from squeezestudy.data.fashion_mnist import Batches

SCAN_DENSITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# Drops and tolerances are compared at dc.POINT_DIGITS decimals: 100 * (0.928 - 0.9272) is
# 0.0800000000000023 in floats, and must count as within a tolerance of 0.08.
DIGITS = dc.POINT_DIGITS


def scan(model: nn.Module, val: Batches, densities=SCAN_DENSITIES, log=lambda _: None) -> pd.DataFrame:
    """One row per (layer, share kept): validation accuracy with that layer alone pruned to that
    share by magnitude, no retraining; `drop_points` against the unpruned model."""
    from squeezestudy.training.evaluate import evaluate

    model.eval()
    base = evaluate(model, val)[1]
    names = dc.weight_names(model)
    params = dict(model.named_parameters())
    rows = []
    for name in names:
        kept = params[name].detach().clone()
        for density in densities:
            dc.apply_masks(model, {name: dc.layer_mask(kept, density)})
            acc = evaluate(model, val)[1]
            params[name].data.copy_(kept)
            rows.append({"layer": name, "weights": kept.numel(), "density": density, "val_acc": acc,
                         "drop_points": round(100 * (base - acc), DIGITS)})
        log(f"scanned {name}: " + ", ".join(f"{r['density']:.0%} {r['drop_points']:+.2f}"
                                            for r in rows[-len(densities):]))
    return pd.DataFrame(rows).assign(base_val_acc=base)


def shares_for(table: pd.DataFrame, tolerance: float) -> dict[str, float]:
    """Per layer, the smallest share scanned whose drop (that layer alone) is within `tolerance`
    points; 1.0 where none is."""
    shares = {}
    for layer, rows in table.groupby("layer", sort=False):
        ok = rows[rows.drop_points.round(DIGITS) <= round(tolerance, DIGITS)]
        shares[layer] = float(ok.density.min()) if not ok.empty else 1.0
    return shares


def dry_bytes(model: nn.Module, density: float | dict[str, float], bits: int, arch: dict) -> int:
    """The size of the file `density` and `bits` give, written without retraining."""
    net = copy.deepcopy(model)
    masks = dc.magnitude_masks(net, density)
    dc.apply_masks(net, masks)
    shared = dc.share_weights(net, masks, bits)
    with tempfile.TemporaryDirectory() as tmp:
        return dc.save(Path(tmp) / "dry.sqdc", net, shared, arch)


def allocate(model: nn.Module, table: pd.DataFrame, bits: int, target_bytes: int, arch: dict) -> dict:
    """The smallest tolerance (fewest points lost, layer by layer) whose dry file is at most
    `target_bytes`: {"tolerance", "densities", "dry_bytes", "kept"}. Raises if even the largest
    tolerance scanned does not fit."""
    tolerances = sorted({max(0.0, round(t, DIGITS)) for t in table.drop_points} | {0.0})
    sizes: dict[float, int] = {}

    def size(t: float) -> int:
        if t not in sizes:
            sizes[t] = dry_bytes(model, shares_for(table, t), bits, arch)
        return sizes[t]

    lo, hi = 0, len(tolerances) - 1
    if size(tolerances[hi]) > target_bytes:
        raise ValueError(f"no tolerance of the scan gives a {bits}-bit file of at most {target_bytes:,} "
                         f"bytes (the largest gives {size(tolerances[hi]):,})")
    while lo < hi:  # sizes fall as the tolerance grows
        mid = (lo + hi) // 2
        if size(tolerances[mid]) <= target_bytes:
            hi = mid
        else:
            lo = mid + 1
    t = tolerances[lo]
    densities = shares_for(table, t)
    weights = table.drop_duplicates("layer").set_index("layer").weights
    kept = sum(densities[n] * weights[n] for n in densities) / weights.sum()
    return {"tolerance": t, "densities": densities, "dry_bytes": size(t), "kept": kept}


def uniform_share(model: nn.Module, bits: int, target_bytes: int, arch: dict, step: float = 0.005) -> dict:
    """The largest share (on a `step` grid) kept in every layer whose dry file is at most
    `target_bytes`: {"density", "dry_bytes"}."""
    lo, hi = 1, round(1 / step)  # in steps
    if dry_bytes(model, lo * step, bits, arch) > target_bytes:
        raise ValueError(f"even {step:.1%} kept gives a {bits}-bit file over {target_bytes:,} bytes")
    while lo < hi:  # sizes grow with the share
        mid = (lo + hi + 1) // 2
        if dry_bytes(model, mid * step, bits, arch) <= target_bytes:
            lo = mid
        else:
            hi = mid - 1
    density = round(lo * step, 6)
    return {"density": density, "dry_bytes": dry_bytes(model, density, bits, arch)}

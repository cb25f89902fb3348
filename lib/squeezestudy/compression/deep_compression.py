"""Deep Compression (Han et al., 2016), the three stages the SqueezeNet paper applies in its Table 2:

1. magnitude pruning, then retraining with the pruned weights held at zero;
2. trained weight sharing: per layer, k-means (linear initialisation) over the surviving weights
   into 2^bits shared values, then retraining the shared values (each centroid's gradient is the
   sum of the gradients of the weights it stands for);
3. Huffman coding of what is stored: each surviving weight's cluster index, and the gaps between
   surviving weights' positions (relative indexing; a gap longer than the index width is bridged
   by a filler entry, as in the paper).

`save` writes the study's own file format (sqdc.py); `load` reads it back into a working model,
checked against its record. Every weight tensor (convolution kernels; ndim > 1) is compressed;
biases are stored as fp32.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from squeezestudy.compression.sqdc import (  # noqa: F401 (the format's names, also from here)
    CompressedFileError,
    expectation,
    load,
    save,
)
from squeezestudy.core import fileio
from squeezestudy.core.paths import display_path
from squeezestudy.data.fashion_mnist import Batches
from squeezestudy.training.rundir import read_weights


def weight_names(model: nn.Module) -> list[str]:
    """The parameters Deep Compression prunes and shares: every weight tensor with ndim > 1."""
    return [name for name, p in model.named_parameters() if p.ndim > 1]


# --- stage 1: pruning --------------------------------------------------------------------------

def magnitude_masks(model: nn.Module, density: float | dict[str, float]) -> dict[str, torch.Tensor]:
    """Per layer, keep the `density` share of weights with the largest magnitude (at least one);
    `density` is one share for every layer, or a share per layer name (per-layer sparsity)."""
    names = weight_names(model)
    shares = density if isinstance(density, dict) else dict.fromkeys(names, density)
    if set(shares) != set(names):
        raise ValueError(f"a share kept is needed for every compressed layer: missing "
                         f"{sorted(set(names) - set(shares))}, unknown {sorted(set(shares) - set(names))}")
    if not all(0 < d <= 1 for d in shares.values()):
        raise ValueError(f"density must be in (0, 1], got {density}")
    params = dict(model.named_parameters())
    return {name: layer_mask(params[name], shares[name]) for name in names}


def layer_mask(weight: torch.Tensor, density: float) -> torch.Tensor:
    """The `density` share of one tensor's weights with the largest magnitude (at least one)."""
    w = weight.detach().abs()
    keep = max(1, round(density * w.numel()))
    return w >= torch.topk(w.flatten(), keep).values[-1]


def schedule(density: float | dict[str, float], steps: int) -> list[float | dict[str, float]]:
    """Iterative pruning (Han et al., 2015): the shares kept after each of `steps` rounds of
    pruning and retraining, falling geometrically from 1 to `density` (per layer if a dict)."""
    if steps < 1:
        raise ValueError(f"prune_steps must be at least 1, got {steps}")
    if isinstance(density, dict):
        return [{n: d ** (k / steps) for n, d in density.items()} for k in range(1, steps + 1)]
    return [density ** (k / steps) for k in range(1, steps + 1)]


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask)


# --- stage 2: trained weight sharing -----------------------------------------------------------

def kmeans_1d(values: torch.Tensor, k: int, iterations: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """(centroids, assignment of each value): Lloyd's algorithm in one dimension, centroids
    initialised evenly between the smallest and largest value (Han et al.'s best initialisation:
    it keeps centroids for the rare large weights)."""
    k = max(1, min(k, values.numel()))
    centroids = torch.linspace(values.min().item(), values.max().item(), k, dtype=torch.float64)
    v = values.double()
    for _ in range(iterations):
        assign = torch.bucketize(v, (centroids[1:] + centroids[:-1]) / 2)
        sums = torch.zeros(k, dtype=torch.float64).index_add_(0, assign, v)
        counts = torch.bincount(assign, minlength=k).double()
        updated = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        if torch.equal(updated, centroids):
            break
        centroids = updated
    assign = torch.bucketize(v, (centroids[1:] + centroids[:-1]) / 2)
    return centroids.float(), assign


@dataclass
class SharedLayer:
    centroids: torch.Tensor  # k shared values
    assign: torch.Tensor  # cluster of each surviving weight, in flattened order
    mask: torch.Tensor  # which weights survive pruning (bool, the weight's shape)

    def weight(self) -> torch.Tensor:
        w = torch.zeros(self.mask.shape, dtype=self.centroids.dtype)
        w[self.mask] = self.centroids[self.assign]
        return w


def share_weights(model: nn.Module, masks: dict[str, torch.Tensor], bits: int) -> dict[str, SharedLayer]:
    params = dict(model.named_parameters())
    shared = {}
    for name, mask in masks.items():
        centroids, assign = kmeans_1d(params[name].detach()[mask], 2**bits)
        shared[name] = SharedLayer(centroids, assign, mask)
    write_shared(model, shared)
    return shared


def write_shared(model: nn.Module, shared: dict[str, SharedLayer]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, layer in shared.items():
            params[name].copy_(layer.weight().to(params[name].device))


# --- retraining --------------------------------------------------------------------------------

def retrain(model: nn.Module, batches: Batches, epochs: int, lr: float,
            masks: dict[str, torch.Tensor] | None = None, shared: dict[str, SharedLayer] | None = None,
            seed: int = 0, label_smoothing: float = 0.0, log: Callable[[str], None] = lambda _: None) -> None:
    """AdamW at a constant `lr` (no weight decay: it would pull pruned zeros' neighbours around).
    With `masks`: pruned weights get no update and stay zero. With `shared`: the shared values
    are trained instead of the weights; biases train as usual in both cases. The model's own
    recipe carries over through `batches` (augmentation) and `label_smoothing`."""
    params = dict(model.named_parameters())
    trained = [p for n, p in params.items() if not (shared and n in shared)]
    centroids = []
    if shared:
        for layer in shared.values():
            layer.centroids = layer.centroids.clone().requires_grad_(False)
            centroids.append(layer.centroids)
    optimizer = torch.optim.AdamW([{"params": trained}, {"params": centroids}], lr=lr, weight_decay=0.0)
    model.train()
    for epoch in range(epochs):
        batches.set_seed(seed * 1000 + epoch)
        torch.manual_seed(seed * 1000 + epoch)
        for x, y in batches:
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
            loss.backward()
            if masks:
                for name, mask in masks.items():
                    params[name].grad.mul_(mask)
            if shared:
                for name, layer in shared.items():
                    g = params[name].grad[layer.mask].double()
                    layer.centroids.grad = torch.zeros_like(layer.centroids, dtype=torch.float64).index_add_(
                        0, layer.assign, g).float()
                    params[name].grad = None  # the weight follows its centroids, not its own gradient
            optimizer.step()
            if masks and not shared:
                apply_masks(model, masks)
            if shared:
                write_shared(model, shared)
        log(f"retrain epoch {epoch + 1}/{epochs}: last batch loss {loss.item():.4f}")
    model.eval()


# --- stage 3: the file ---------------------------------------------------------------------------







def storage(shared: dict[str, SharedLayer], model: nn.Module) -> dict:
    """Counts for the record: weights, surviving weights, bits a weight in the file."""
    total = sum(layer.mask.numel() for layer in shared.values())
    kept = sum(int(layer.mask.sum()) for layer in shared.values())
    others = sum(p.numel() for n, p in model.named_parameters() if n not in shared)
    return {"weights": total, "kept": kept, "density": kept / total, "other_params": others}


def compress(model: nn.Module, train: Batches, density: float | dict[str, float], bits: int,
             prune_epochs: int = 2, share_epochs: int = 1, lr: float = 1e-4, seed: int = 0,
             label_smoothing: float = 0.0, log: Callable[[str], None] = lambda _: None,
             prune_steps: int = 1) -> dict[str, SharedLayer]:
    """The three stages on `model` (changed in place): prune to `density` (one share, or one per
    layer) and retrain, in `prune_steps` rounds that share `prune_epochs` evenly (1: one-shot);
    share weights in 2^bits clusters per layer and retrain the shared values. Returns what `save`
    stores."""
    if prune_epochs % prune_steps:
        raise ValueError(f"{prune_epochs} epochs of retraining do not split evenly into {prune_steps} "
                         "pruning steps")
    for step, share in enumerate(schedule(density, prune_steps)):
        masks = magnitude_masks(model, share)  # pruned weights are zero: they stay pruned
        apply_masks(model, masks)
        if prune_steps > 1:
            log(f"pruning step {step + 1}/{prune_steps}: {kept_share(masks):.1%} of the weights kept")
        retrain(model, train, prune_epochs // prune_steps, lr, masks=masks, seed=seed + 100 * step,
                label_smoothing=label_smoothing, log=log)
    shared = share_weights(model, masks, bits)
    retrain(model, train, share_epochs, lr, masks=masks, shared=shared, seed=seed + 1,
            label_smoothing=label_smoothing, log=log)
    return shared


def kept_share(masks: dict[str, torch.Tensor]) -> float:
    return sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())


def compress_run(weights: str | Path, model: str, model_kwargs: dict, density: float | dict[str, float],
                 bits: int, out_dir: str | Path, prune_epochs: int = 2, share_epochs: int = 1,
                 lr: float = 1e-4, seed: int = 0, augment: bool = False, label_smoothing: float = 0.0,
                 dataset=None, log: Callable[[str], None] = print, sealed: bool = False,
                 prune_steps: int = 1, tag: str | None = None) -> dict:
    """Deep-compress a trained model's fp32 state dict (`weights`) and record, from the file read
    back: its size, and validation and test accuracy. Writes `<name>.sqdc` and `<name>.json`.
    `augment` and `label_smoothing`: the retraining uses the model's own recipe's. `sealed`: a
    search run, chosen on validation: no test accuracy is computed (null in the record).
    `density` per layer (a dict) needs a `tag` to name the file (`<run>-dc-<tag>-<bits>bit`);
    `prune_steps` > 1: iterative pruning (`compress`)."""
    from squeezestudy.data import fashion_mnist as fmnist
    from squeezestudy.models import build
    from squeezestudy.training.evaluate import evaluate

    dataset = dataset if dataset is not None else fmnist.load()
    mean, std = dataset.mean_std()

    def batches(split, train):
        return Batches(split, 256 if train else 1000, mean=mean, std=std, shuffle=train, drop_last=train,
                       augment=train and augment)

    kwargs = {"num_classes": fmnist.NUM_CLASSES, "in_channels": 1, **model_kwargs}
    net = build(model, **kwargs)
    net.load_state_dict(read_weights(weights))  # a damaged file: an error naming it
    def test_acc(model) -> float | None:
        return None if sealed else evaluate(model, batches(dataset.test, False))[1]

    before = {"val_acc": evaluate(net, batches(dataset.val, False))[1], "test_acc": test_acc(net)}
    shared = compress(net, batches(dataset.train, True), density, bits, prune_epochs, share_epochs, lr,
                      seed, label_smoothing, log, prune_steps=prune_steps)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(density, dict) and not tag:
        raise ValueError("a share kept per layer needs a tag to name its file")
    name = f"{Path(weights).stem.removesuffix('-fp32')}-dc-{tag or f'd{density:g}'}-{bits}bit"
    size = save(out_dir / f"{name}.sqdc", net, shared, {"model": model, "kwargs": kwargs})
    loaded = load(out_dir / f"{name}.sqdc")
    digest = hashlib.sha256((out_dir / f"{name}.sqdc").read_bytes()).hexdigest()
    record = {"name": name, "source": display_path(weights), "model": model, "density": density, "bits": bits,
              "prune_epochs": prune_epochs, "share_epochs": share_epochs, "lr": lr, "seed": seed,
              "augment": augment, "label_smoothing": label_smoothing,
              "file_bytes": size, "file_sha256": digest, "uncompressed": before,
              "val_acc": evaluate(loaded, batches(dataset.val, False))[1],
              "test_acc": test_acc(loaded), "sealed": sealed, **storage(shared, net),
              **({"prune_steps": prune_steps} if prune_steps > 1 else {}),
              **({"setting": tag} if tag else {}),
              **({"layer_density": density} if isinstance(density, dict) else {})}
    fileio.write_text(out_dir / f"{name}.json", json.dumps(record, indent=2) + "\n")
    test = "test sealed" if sealed else f"test {record['test_acc']:.4f} (was {before['test_acc']:.4f})"
    log(f"{name}: {size:,} bytes, val {record['val_acc']:.4f} (was {before['val_acc']:.4f}), {test}")
    return record


MAX_VAL_DROP_POINTS = 0.5  # a recipe may cost at most this much validation accuracy
# Points of accuracy are compared at this many decimals: 100 * (0.9230 - 0.9280) is
# -0.5000000000000004 in floats, and a drop of exactly 0.5 (25 of 5,000 images) is within 0.5.
POINT_DIGITS = 6


def within(change_points: pd.Series, max_drop: float = MAX_VAL_DROP_POINTS) -> pd.Series:
    """Whether each change in points is at most `max_drop` below zero (at POINT_DIGITS decimals)."""
    return change_points.round(POINT_DIGITS) >= -max_drop


def records(out_dir: str | Path, source: str, sealed: bool = False) -> pd.DataFrame:
    """The recipes tried on one model (`source`: the weights' stem, e.g. `headline-b96-s0`), one
    row each, with the file size in KB and the validation change in points. `sealed`: the sealed
    search's records (no test accuracy) instead of the first round's."""
    found = [r for r in (json.loads(p.read_text()) for p in sorted(Path(out_dir).glob(f"{source}-dc-*.json")))
             if bool(r.get("sealed")) == sealed]
    if not found:
        raise FileNotFoundError(f"no Deep Compression record of {source} in {out_dir}; run "
                                "`squeezestudy deep-compression` first")
    table = pd.DataFrame(found)
    table["file_KB"] = table.file_bytes / 1000
    table["val_change"] = 100 * (table.val_acc - table.uncompressed.map(lambda u: u["val_acc"]))
    return table


def choose(table: pd.DataFrame, max_drop: float = MAX_VAL_DROP_POINTS) -> pd.DataFrame:
    """Per bit width, the smallest file whose validation accuracy is at most `max_drop` points
    below the uncompressed model's (the rule is fixed before the test set is looked at)."""
    allowed = table[within(table.val_change, max_drop)]
    return allowed.loc[allowed.groupby("bits").file_bytes.idxmin()].set_index("bits")


def table2(label: str, fp32: nn.Module, fp32_bytes: int, chosen: pd.DataFrame, out_dir: str | Path,
           test: Batches, calibration: Batches, alexnet_bytes: int, alexnet_acc: float) -> pd.DataFrame:
    """The paper's Table 2 at this scale for one model: AlexNet-112's fp32 file, the model's fp32
    file, its int8 post-training quantization, and each chosen Deep Compression file read back
    from disk; sizes in bytes, the ratio to AlexNet's file, test accuracy and its change."""
    from squeezestudy.compression.int8 import int8_result
    from squeezestudy.training.evaluate import evaluate

    fp32.eval()
    int8 = int8_result(fp32, f"table2/{label}", test, calibration)  # recorded where measured
    int8_bytes, int8_acc = int8["file_bytes"], int8["test_acc"]
    rows = [("AlexNet-112", "none (fp32)", alexnet_bytes, alexnet_acc),
            (label, "none (fp32)", fp32_bytes, evaluate(fp32, test)[1]),
            (label, "int8 (post-training)", int8_bytes, int8_acc)]
    for bits, row in chosen.iterrows():
        path = Path(out_dir) / f"{row['name']}.sqdc"
        model = load(path, expect=expectation(row.to_dict()))  # the file its record describes
        rows.append((label, f"Deep Compression, {bits}-bit, {row.density:.0%} kept", path.stat().st_size,
                     evaluate(model, test)[1]))
    table = pd.DataFrame(rows, columns=["model", "compression", "file_bytes", "test_acc"])
    table["x_smaller_than_alexnet"] = (alexnet_bytes / table.file_bytes).round(1)
    table["change_points"] = (100 * (table.test_acc - table.test_acc.iloc[1])).round(2)
    table.loc[0, "change_points"] = float("nan")
    return table

"""Trained weights a reader can load without training: the final fp32 state dict of each
small-model run, committed under outputs/weights/<run>.pt, and one call to get a ready model.

    from squeezestudy import weights
    labels = weights.predict("headline-b96aug60-s0", images)  # uint8 images as in the IDX files
    model = weights.load_model("lenet-s0")   # eval mode, on the CPU; expects normalised input

The model is built from the run's own config (outputs/runs/<run>/metrics.json). Checkpoints
(outputs/runs/<run>/checkpoint.pt) are not committed; `export` turns one into a weight file:

    python -m squeezestudy.runs.weights export lenet-s1 squeezenet_fmnist-s1
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from squeezestudy.core import fileio
from squeezestudy.core.paths import RUNS_DIR, WEIGHTS_DIR
from squeezestudy.data import fashion_mnist as data
from squeezestudy.models.summary import weight_bytes
from squeezestudy.runs.finished import keeps_weights, load_trained_model
from squeezestudy.training.config import TrainConfig, build_model
from squeezestudy.training.rundir import CHECKPOINT, read_metrics, read_weights


class WeightsNotFoundError(FileNotFoundError):
    """No committed weight file for a run."""


class WeightsFileError(ValueError):
    """A weight file that is not the one exported for its run."""


DIGESTS = "SHA256SUMS"  # beside the weight files: `sha256sum -c SHA256SUMS` checks them too


def digests(weights_dir: str | Path = WEIGHTS_DIR) -> dict[str, str]:
    """File name -> SHA-256 recorded when each weight file was exported ({} without a record)."""
    sums = Path(weights_dir) / DIGESTS
    if not sums.is_file():
        return {}
    return {name: digest for digest, name in (line.split(maxsplit=1) for line in sums.read_text().splitlines()
                                              if line.strip())}


def _record_digest(file: Path) -> None:
    recorded = {**digests(file.parent), file.name: hashlib.sha256(file.read_bytes()).hexdigest()}
    fileio.write_text(file.parent / DIGESTS, "".join(f"{d}  {n}\n" for n, d in sorted(recorded.items())))


def _check_digest(file: Path, run: str) -> None:
    recorded = digests(file.parent)
    if not recorded:
        return  # a folder of weights without a record (not the study's): nothing to check against
    again = f"restore it from git (git checkout -- {file}) or export it again " \
            f"(`python -m squeezestudy.runs.weights export {run}`)"
    if file.name not in recorded:
        raise WeightsFileError(f"{file}: not in {file.parent / DIGESTS}, the record of the exported "
                               f"weights; {again}")
    if hashlib.sha256(file.read_bytes()).hexdigest() != recorded[file.name]:
        raise WeightsFileError(f"{file}: not the file that was exported (its SHA-256 differs from "
                               f"{DIGESTS}): changed or damaged since; {again}")


def path(run: str, weights_dir: str | Path = WEIGHTS_DIR) -> Path:
    return Path(weights_dir) / f"{run}.pt"


def available(weights_dir: str | Path = WEIGHTS_DIR) -> list[str]:
    """Run names that have a weight file, sorted."""
    return sorted(p.stem for p in Path(weights_dir).glob("*.pt"))


def run_config(run: str, runs_dir: str | Path = RUNS_DIR) -> TrainConfig:
    """The training config a run recorded in its metrics.json."""
    metrics_file = Path(runs_dir) / run / "metrics.json"
    if not metrics_file.is_file():
        raise WeightsNotFoundError(f"{metrics_file} not found: {run!r} is not a finished run")
    return TrainConfig(**read_metrics(metrics_file)["config"])


def load_model(run: str, device: str | torch.device = "cpu", weights_dir: str | Path = WEIGHTS_DIR,
               runs_dir: str | Path = RUNS_DIR) -> nn.Module:
    """The trained model of `run` (e.g. "lenet-s0"), built from its config, in eval mode.

    The network takes float images of shape (N, 1, S, S), S its input side (`input_spec(run)`:
    28, or 112 for AlexNet-112), scaled to [0, 1] and then normalised with the training split's
    pixel mean and std: `(x / 255 - mean) / std`, mean 0.2860 and std 0.3527 for every run of the
    study. It returns logits over data.CLASSES. Raw [0, 1] images give near-chance accuracy: use
    `predict(run, images)`, which prepares them as the run was trained to see them."""
    file = path(run, weights_dir)
    if not file.is_file():
        raise WeightsNotFoundError(_missing(run, weights_dir, runs_dir))
    _check_digest(file, run)
    config = run_config(run, runs_dir)
    model = build_model(config)
    try:
        model.load_state_dict(read_weights(file))  # a damaged file: an error naming it
    except RuntimeError as err:  # weights of another architecture
        raise WeightsFileError(f"{file}: its weights do not fit {run}'s {config.model} "
                               f"({str(err).strip().splitlines()[0]}); it is another model's file: "
                               f"export {run}'s weights again") from None
    return model.to(device).eval()


def _missing(run: str, weights_dir: str | Path, runs_dir: str | Path) -> str:
    """What to do about a run without a weight file, for that run."""
    metrics_file = Path(runs_dir) / run / "metrics.json"
    if metrics_file.is_file():
        metrics = read_metrics(metrics_file)
        size = weight_bytes(metrics["params"])

        if not keeps_weights(metrics["params"]):
            return (f"{run!r} is a finished run, but its weights ({size / 1e6:.0f} MB in fp32) are over "
                    "the repository's size limit and are not committed. To have them, train it again "
                    f"on a GPU: `squeezestudy batch --profile full --only {run} --force --gpus 0` "
                    "(docs/gpu.md; on a CPU one run takes hours), then "
                    f"`python -m squeezestudy.runs.weights export {run}`.")
        return (f"{run!r} is a finished run, but {path(run, weights_dir)} is missing: restore it with "
                f"`git checkout -- {path(run, weights_dir)}`, or export it from the run's checkpoint "
                f"with `python -m squeezestudy.runs.weights export {run}`.")
    have = available(weights_dir)
    close = [r for r in have if r.split("-s")[0] == run.split("-s")[0]] or have[:6]
    return (f"no run {run!r} in {runs_dir}: it was never trained. Runs with weights include "
            f"{', '.join(close) or 'none'} (weights.available() lists all {len(have)}); a run of "
            "the manifest that is missing is trained by `make study`.")


def input_spec(run: str, runs_dir: str | Path = RUNS_DIR) -> dict:
    """What `run`'s network expects: input side in pixels and the normalisation's mean and std
    (recorded by the run; runs from before that record used the same training split's)."""
    metrics = read_metrics(Path(runs_dir) / run / "metrics.json") if (Path(runs_dir) / run).is_dir() else None
    if metrics is None:
        raise WeightsNotFoundError(_missing(run, WEIGHTS_DIR, runs_dir))
    norm = metrics.get("normalisation") or {"mean": data.TRAIN_MEAN, "std": data.TRAIN_STD}
    size = metrics.get("image_size") or run_config(run, runs_dir).resolved_image_size()
    return {"image_size": int(size), "mean": float(norm["mean"]), "std": float(norm["std"])}


def as_uint8_images(images) -> torch.Tensor:
    """Images as a reader has them, as uint8 (N, 28, 28): a uint8 array or tensor of shape
    (N, 28, 28), (N, 1, 28, 28) or (28, 28) as read from the IDX files, a PIL image, or a list of
    PIL images (converted to 8-bit grey)."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("no images given: pass an array of shape (N, 28, 28) or a list of images")
        return torch.cat([as_uint8_images(i) for i in images])
    if hasattr(images, "convert") and hasattr(images, "size"):  # a PIL image
        images = np.asarray(images.convert("L"))
    tensor = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images))
    if tensor.dtype != torch.uint8:
        raise TypeError(f"images should be uint8 pixels 0-255 as in the IDX files, got {tensor.dtype}; "
                        "for floats in [0, 1] pass (x * 255).round().to(torch.uint8)")
    if tensor.dim() == 4 and tensor.shape[1] == 1:
        tensor = tensor[:, 0]
    elif tensor.dim() == 2:
        tensor = tensor[None]
    if tensor.dim() != 3:
        raise ValueError(f"images of shape {tuple(tensor.shape)}: expected (N, 28, 28), (N, 1, 28, 28) "
                         "or one (28, 28) image")
    return tensor.cpu().contiguous()


@torch.no_grad()
def predict(run: str, images, batch_size: int = 1000, device: str | torch.device = "cpu",
            model: nn.Module | None = None) -> torch.Tensor:
    """Class indices (int64, shape (N,); names in data.CLASSES) that `run`'s model gives `images`
    (see `as_uint8_images`), prepared as the run was trained: resized to its input side and
    normalised with its own mean and std. `model`: the run's loaded model, to skip loading it."""
    pixels = as_uint8_images(images)
    spec = input_spec(run)
    model = model if model is not None else load_model(run, device)
    batches = data.Batches(data.Split(pixels, torch.zeros(len(pixels), dtype=torch.long)), batch_size,
                           mean=spec["mean"], std=spec["std"], image_size=spec["image_size"],
                           device=device)
    return torch.cat([model(x).argmax(1).cpu() for x, _ in batches])


def export(run: str, runs_dir: str | Path = RUNS_DIR, weights_dir: str | Path = WEIGHTS_DIR) -> Path:
    """Write the final weights of a run's checkpoint as a plain fp32 state dict (CPU,
    contiguous tensors) to weights_dir/<run>.pt; returns its path."""
    checkpoint = Path(runs_dir) / run / CHECKPOINT
    if not checkpoint.is_file():
        raise WeightsNotFoundError(f"{checkpoint} not found: the run's checkpoint is needed to export "
                                   f"its weights (checkpoints are not committed)")
    model, _ = load_trained_model(checkpoint.parent)
    written = save_state_dict(model, path(run, weights_dir))
    _record_digest(written)
    return written


def save_state_dict(model: nn.Module, file: str | Path) -> Path:
    """The model's parameters and buffers as fp32 CPU contiguous tensors, written atomically."""
    state = {k: (v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu()).contiguous()
             for k, v in model.state_dict().items()}
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    fileio.torch_save(state, file)
    return file


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] != "export":
        print("usage: python -m squeezestudy.runs.weights export RUN [RUN ...]", file=sys.stderr)
        return 2
    failed = 0
    for run in argv[1:]:
        try:
            written = export(run)
        except (WeightsNotFoundError, ValueError) as err:
            print(f"{run}: {err}", file=sys.stderr)
            failed += 1
            continue
        print(f"{run}: {written} ({written.stat().st_size:,} bytes)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Fashion-MNIST held in memory as uint8 tensors, batched by index on the device.

Where the files come from, in order: an explicit directory, the environment
variable FASHION_MNIST_DIR, the repository's `data/FashionMNIST/raw`
(torchvision's layout), else a torchvision download into `data/`.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from squeezestudy.core.paths import DATA_DIR
from squeezestudy.data.idx import IdxError, read_idx, verify_checksums

ENV_VAR = "FASHION_MNIST_DIR"
RAW_DIR = DATA_DIR / "FashionMNIST" / "raw"

CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
NUM_CLASSES = len(CLASSES)
IMAGE_SIZE = 28
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}
# Pixel mean and std of the 55,000-image training split scaled to [0, 1] (FashionMNIST.mean_std,
# which tests check against these): every model of the study expects (x / 255 - mean) / std.
TRAIN_MEAN, TRAIN_STD = 0.2859777510166168, 0.35267481207847595
VAL_PER_CLASS = 500  # 5,000 validation images: the last 500 of each class in file order


class DataNotFoundError(FileNotFoundError):
    """Fashion-MNIST is neither on disk nor downloadable."""


@dataclass(frozen=True)
class Split:
    """One split: images as uint8 [N, 28, 28], labels as int64 [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int) -> Split:
        """The first n images of each class, interleaved (balanced and deterministic)."""
        per_class = max(1, n // NUM_CLASSES)
        idx = torch.cat([torch.nonzero(self.labels == c).flatten()[:per_class] for c in range(NUM_CLASSES)])
        idx = idx.sort().values
        return Split(self.images[idx], self.labels[idx])


@dataclass(frozen=True)
class FashionMNIST:
    train: Split
    val: Split
    test: Split
    source: Path
    verified: tuple[str, ...] = ()

    @property
    def classes(self) -> tuple[str, ...]:
        return CLASSES

    def mean_std(self) -> tuple[float, float]:
        """Pixel mean and std of the training split, scaled to [0, 1]."""
        return self._train_stats

    @functools.cached_property
    def _train_stats(self) -> tuple[float, float]:  # computed once: 43M pixels
        x = self.train.images.float().div_(255)
        return x.mean().item(), x.std().item()


def _find_file(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _has_all_files(directory: Path) -> bool:
    return all(_find_file(directory, stem) for pair in FILES.values() for stem in pair[:2])


def locate(directory: str | Path | None = None, download: bool = True) -> Path:
    """Directory holding the four IDX files, found (or downloaded) in the documented order."""
    if directory is not None:
        directory = Path(directory).expanduser()
        if not _has_all_files(directory):
            raise DataNotFoundError(_missing_message(directory, "the directory you passed"))
        return directory
    if os.environ.get(ENV_VAR):
        env_dir = Path(os.environ[ENV_VAR]).expanduser()
        if not _has_all_files(env_dir):
            raise DataNotFoundError(_missing_message(env_dir, f"${ENV_VAR}"))
        return env_dir
    if _has_all_files(RAW_DIR):
        return RAW_DIR
    if download:
        try:
            download_to(RAW_DIR)
        except Exception as err:  # no network, a proxy, a mirror down, a full disk...
            raise DataNotFoundError(
                _missing_message(RAW_DIR, "the default location") + f"\nDownload failed: {err}"
            ) from err
        if _has_all_files(RAW_DIR):
            return RAW_DIR
    raise DataNotFoundError(_missing_message(RAW_DIR, "the default location"))


def download_to(raw_dir: Path) -> None:
    """Download the four files with torchvision into a temporary folder next to `raw_dir`, then
    move each into place with one rename: an interrupted download leaves no partial file where
    the data is looked for."""
    from torchvision.datasets import FashionMNIST as TorchvisionFashionMNIST

    raw_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=raw_dir.parent))
    try:
        for train in (True, False):
            TorchvisionFashionMNIST(str(scratch), train=train, download=True)
        downloaded = scratch / "FashionMNIST" / "raw"
        for stem in (stem for pair in FILES.values() for stem in pair[:2]):
            found = _find_file(downloaded, stem)
            if found is None:
                raise DataNotFoundError(f"the download did not produce {stem}")
            os.replace(found, raw_dir / found.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _missing_message(directory: Path, where: str) -> str:
    names = ", ".join(f"{stem}[.gz]" for pair in FILES.values() for stem in pair[:2])
    if directory.is_file():
        problem = f"{directory} ({where}) is a file, not a directory of Fashion-MNIST files."
    elif not directory.exists():
        problem = f"Fashion-MNIST not found: {directory} ({where}) does not exist."
    else:
        missing = [stem for pair in FILES.values() for stem in pair[:2] if not _find_file(directory, stem)]
        try:
            empty = not any(directory.iterdir())
        except OSError as err:
            empty, missing = False, [f"(cannot list it: {err.strerror})"]
        problem = (f"Fashion-MNIST not found in {directory} ({where}): "
                   f"{'it is empty' if empty else 'missing ' + ', '.join(missing)}.")
    return (
        f"{problem}\n"
        f"Put the four IDX files ({names}) in {RAW_DIR}, "
        f"or set {ENV_VAR}=/path/to/dir that holds them, "
        "or run on a machine with internet so torchvision can download them."
    )


def read_split(directory: Path, split: str) -> Split:
    image_stem, label_stem, count = FILES[split]
    image_path = _find_file(directory, image_stem)
    label_path = _find_file(directory, label_stem)
    if image_path is None or label_path is None:
        raise DataNotFoundError(_missing_message(directory, f"the {split} split"))
    images = read_idx(image_path, expected_ndim=3)
    labels = read_idx(label_path, expected_ndim=1)
    if tuple(images.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE):
        raise IdxError(f"{image_path}: images are {tuple(images.shape[1:])}, expected 28x28")
    if len(images) != len(labels):
        raise IdxError(
            f"{image_path} holds {len(images):,} images but {label_path} holds "
            f"{len(labels):,} labels; the two files do not belong together"
        )
    if len(labels) != count:
        raise IdxError(f"{label_path}: {len(labels):,} items, the {split} split has {count:,}")
    if int(labels.max()) >= NUM_CLASSES:
        raise IdxError(f"{label_path}: label {int(labels.max())} outside 0..{NUM_CLASSES - 1}")
    return Split(images, labels.long())


def validation_indices(labels: torch.Tensor, per_class: int = VAL_PER_CLASS) -> torch.Tensor:
    """The last `per_class` indices of each class, in file order: stratified and seed-free."""
    idx = [torch.nonzero(labels == c).flatten()[-per_class:] for c in range(NUM_CLASSES)]
    return torch.cat(idx).sort().values


def load(directory: str | Path | None = None, download: bool = True) -> FashionMNIST:
    """Load and validate all of Fashion-MNIST: train (55,000), val (5,000), test (10,000)."""
    source = locate(directory, download)
    names = [p.name for s in FILES.values() for stem in s[:2] if (p := _find_file(source, stem))]
    verified = verify_checksums(source, names)
    full_train = read_split(source, "train")
    test = read_split(source, "test")
    val_idx = validation_indices(full_train.labels)
    keep = torch.ones(len(full_train), dtype=torch.bool)
    keep[val_idx] = False
    train = Split(full_train.images[keep], full_train.labels[keep])
    val = Split(full_train.images[val_idx], full_train.labels[val_idx])
    return FashionMNIST(train, val, test, source, tuple(verified))


class Batches:
    """Iterates a split in batches by index; preprocessing runs batched on `device`.

    The uint8 images move to the device once. Per batch: optional augmentation
    (random crop with zero padding, horizontal flip) on uint8, conversion to
    float, optional bilinear resize, normalisation with the train-set statistics.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        mean: float,
        std: float,
        device: torch.device | str = "cpu",
        image_size: int = IMAGE_SIZE,
        shuffle: bool = False,
        drop_last: bool = False,
        augment: bool = False,
        erase: float = 0.0,
        crop_padding: int = 2,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.batch_size = batch_size
        self.mean, self.std = mean, std
        self.image_size = image_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.augment, self.crop_padding = augment, crop_padding
        if not 0 <= erase <= 1:
            raise ValueError(f"erase is the share of images erased, in [0, 1]; got {erase}")
        self.erase = erase
        self.channels_last = channels_last
        self.dtype = dtype
        self.generator = torch.Generator()  # on CPU so orders match across devices

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_seed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield self.prepare(self.images[idx]), self.labels[idx]

    def _crop_and_flip(self, images: torch.Tensor) -> torch.Tensor:
        b, h, w = images.shape
        p = self.crop_padding
        g = self.generator
        if p > 0:
            padded = F.pad(images, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (b,), generator=g).to(self.device)
            dx = torch.randint(0, 2 * p + 1, (b,), generator=g).to(self.device)
            rows = dy[:, None] + torch.arange(h, device=self.device)[None]
            cols = dx[:, None] + torch.arange(w, device=self.device)[None]
            batch = torch.arange(b, device=self.device)[:, None, None]
            images = padded[batch, rows[:, :, None], cols[:, None, :]]
        flip = (torch.rand(b, generator=g) < 0.5).to(self.device)
        return torch.where(flip[:, None, None], images.flip(-1), images)

    def _erase(self, images: torch.Tensor) -> torch.Tensor:
        """Random erasing (Zhong et al. 2020) on uint8: each image, with probability `erase`, loses
        one rectangle of 2-25% of its area, aspect ratio 0.3-3.3, to zeros (the background)."""
        b, h, w = images.shape
        g = self.generator
        area = h * w * (0.02 + 0.23 * torch.rand(b, generator=g))
        aspect = torch.exp(math.log(0.3) + (math.log(3.3) - math.log(0.3)) * torch.rand(b, generator=g))
        eh = (area * aspect).sqrt().round().clamp(1, h).long()
        ew = (area / aspect).sqrt().round().clamp(1, w).long()
        top = (torch.rand(b, generator=g) * (h - eh + 1)).long()
        left = (torch.rand(b, generator=g) * (w - ew + 1)).long()
        chosen = torch.rand(b, generator=g) < self.erase
        rows = torch.arange(h)[None, :]
        cols = torch.arange(w)[None, :]
        in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])
        in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])
        mask = (in_rows[:, :, None] & in_cols[:, None, :] & chosen[:, None, None]).to(self.device)
        return images.masked_fill(mask, 0)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 28, 28] -> normalised float [B, 1, S, S] on the device."""
        if self.augment:
            images = self._crop_and_flip(images)
        if self.erase:
            images = self._erase(images)
        x = images.unsqueeze(1).to(self.dtype)
        if self.image_size != images.shape[-1]:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False)
        # (x/255 - mean)/std, folded into one multiply-add
        x = x.mul_(1 / (255 * self.std)).sub_(self.mean / self.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

"""Fashion-MNIST: the IDX files found (or downloaded) and checked, the whole set as uint8 tensors,
batches by index with normalisation and augmentation on the device."""

from squeezestudy.data.fashion_mnist import (
    CLASSES,
    ENV_VAR,
    IMAGE_SIZE,
    NUM_CLASSES,
    TRAIN_MEAN,
    TRAIN_STD,
    Batches,
    DataNotFoundError,
    FashionMNIST,
    Split,
    load,
    locate,
)
from squeezestudy.data.idx import IdxError, read_idx

__all__ = ["CLASSES", "ENV_VAR", "IMAGE_SIZE", "NUM_CLASSES", "TRAIN_MEAN", "TRAIN_STD", "Batches",
           "DataNotFoundError", "FashionMNIST", "Split", "load", "locate", "IdxError", "read_idx"]

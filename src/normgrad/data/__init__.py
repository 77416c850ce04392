"""Data loading at the edge: the IDX format and the datasets the trainer knows."""

from normgrad.data.datasets import (
    DATASETS,
    Dataset,
    DatasetError,
    Split,
    fashion_mnist_available,
    load_dataset,
)
from normgrad.data.idx import IdxError, read_idx, write_idx

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetError",
    "IdxError",
    "Split",
    "fashion_mnist_available",
    "load_dataset",
    "read_idx",
    "write_idx",
]

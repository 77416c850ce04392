"""Data loading at the edge: the IDX format and the datasets the trainer knows."""

from normgrad.data.datasets import DATASETS, Dataset, DatasetError, load_dataset
from normgrad.data.idx import IdxError, read_idx, write_idx

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetError",
    "IdxError",
    "load_dataset",
    "read_idx",
    "write_idx",
]

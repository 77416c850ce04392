"""Datasets for training: Fashion-MNIST, MNIST (IDX files, downloaded if need be) and
scikit-learn's 8x8 digits.

A :class:`Dataset` holds named :class:`Split` s: ``train`` and ``test`` always, and a
``validation`` split when one is held out of the training images
(:meth:`Dataset.hold_out_validation`). Images come back flattened, float32, scaled to
[0, 1]; labels as int64.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from normgrad.data.idx import IdxError, read_idx
from normgrad.errors import NormgradUsageError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian: dataset-fashion-mnist
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
DATASETS = ("fashion-mnist", "mnist", "digits")
#: MNIST and Fashion-MNIST label their images 0..9.
IDX_NUM_CLASSES = 10


class DatasetError(NormgradUsageError):
    """A dataset that cannot be found or read; the message says what to do."""


@dataclass(frozen=True)
class Split:
    """Images ``x`` of shape (n, features) and their labels ``y`` of shape (n,)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index) -> Split:
        """The images and labels at ``index`` (a slice or an index array)."""
        return Split(self.x[index], self.y[index])


@dataclass(frozen=True)
class Dataset:
    name: str
    source: str  # where it came from, for reports
    train: Split
    test: Split
    validation: Split | None = None  # held out of the training images, never the test ones

    @property
    def num_features(self) -> int:
        return self.train.x.shape[1]

    @property
    def num_classes(self) -> int:
        splits = (self.train, self.test, self.validation)
        return int(max(s.y.max() for s in splits if s is not None and len(s))) + 1

    def hold_out_validation(self, num_train: int, num_validation: int) -> Dataset:
        """Train on the first ``num_train`` training images and validate on the last
        ``num_validation``; the test split is left as it is."""
        available = len(self.train)
        if available < num_train + num_validation:
            raise DatasetError(
                f"{self.name} has {available} training images; {num_train} to train on and "
                f"{num_validation} to validate on need {num_train + num_validation}"
            )
        return Dataset(
            self.name,
            self.source,
            train=self.train[:num_train],
            test=self.test,
            validation=self.train[available - num_validation :],
        )


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise DatasetError(f"{directory}: missing {stem} (or {stem}.gz)")


def load_idx_dir(directory: str | Path, name: str) -> Dataset:
    """The four IDX files of MNIST/Fashion-MNIST in ``directory``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"{name}: no such directory {directory}")
    paths = {k: _find(directory, stem) for k, stem in IDX_FILES.items()}
    try:
        arrays = {k: read_idx(p) for k, p in paths.items()}
    except IdxError as exc:
        raise DatasetError(str(exc)) from None
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1:
            raise DatasetError(
                f"{paths[f'x_{split}']}: expected images (n, rows, cols) and labels (n,); got "
                f"{x.shape} and {y.shape}"
            )
        if len(x) != len(y):
            raise DatasetError(
                f"{paths[f'x_{split}']} holds {len(x)} images but {paths[f'y_{split}']} holds "
                f"{len(y)} labels"
            )
        labels = arrays[f"y_{split}"]
        bad = (labels < 0) | (labels >= IDX_NUM_CLASSES)
        if bad.any():
            where = int(np.flatnonzero(bad)[0])
            raise DatasetError(
                f"{paths[f'y_{split}']}: label {int(labels[where])} at index {where}; {name} "
                f"labels are 0..{IDX_NUM_CLASSES - 1}"
            )
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        train_size, test_size = (
            "x".join(map(str, arrays[k].shape[1:])) for k in ("x_train", "x_test")
        )
        raise DatasetError(
            f"{directory}: the training images are {train_size} but the test images are "
            f"{test_size}; both splits must have the same image size"
        )

    def images(a):
        return (a.reshape(len(a), -1) / 255.0).astype(np.float32)

    return Dataset(
        name,
        str(directory),
        train=Split(images(arrays["x_train"]), arrays["y_train"].astype(np.int64)),
        test=Split(images(arrays["x_test"]), arrays["y_test"].astype(np.int64)),
    )


def load_mnist(data_dir: str | Path | None = None, log=print) -> Dataset:
    """MNIST from ``data_dir`` (default: pooch's per-user cache). Files it lacks are
    downloaded, hash-checked, with pooch (``normgrad[mnist]``; :mod:`normgrad.data.download`);
    ``log`` hears each download."""
    from normgrad.data import download

    directory = Path(data_dir) if data_dir else download.default_cache()
    if not idx_files_present(directory):
        download.fetch_mnist(directory, log=log)
    return load_idx_dir(directory, "mnist")


def load_digits() -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images): 1500 to train, 297 to test."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise DatasetError(
            "the digits dataset needs scikit-learn: pip install 'normgrad[train]'"
        ) from None
    bunch = sk_load_digits()
    order = np.random.default_rng(0).permutation(len(bunch.target))
    x = (bunch.data[order] / 16.0).astype(np.float32)
    y = bunch.target[order].astype(np.int64)
    digits = Split(x, y)
    return Dataset("digits", "scikit-learn load_digits", train=digits[:1500], test=digits[1500:])


def idx_files_present(directory: str | Path) -> bool:
    """Whether ``directory`` holds the four IDX files (each plain or ``.gz``)."""
    directory = Path(directory)
    return all(
        (directory / s).is_file() or (directory / (s + ".gz")).is_file() for s in IDX_FILES.values()
    )


def fashion_mnist_available(data_dir: str | Path | None = None) -> bool:
    return idx_files_present(Path(data_dir) if data_dir else FASHION_MNIST_DIR)


def load_dataset(name: str, data_dir: str | Path | None = None) -> Dataset:
    """``fashion-mnist`` (Debian's package, or ``data_dir``), ``mnist`` (``data_dir``, or
    downloaded: :func:`load_mnist`), or ``digits`` (no files needed)."""
    if name == "fashion-mnist":
        directory = Path(data_dir) if data_dir else FASHION_MNIST_DIR
        if not data_dir and not directory.is_dir():
            raise DatasetError(
                f"Fashion-MNIST is not installed at {directory}: apt-get install "
                "dataset-fashion-mnist, or pass --data-dir with its four IDX files"
            )
        return load_idx_dir(directory, name)
    if name == "mnist":
        return load_mnist(data_dir)
    if name == "digits":
        return load_digits()
    raise DatasetError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")

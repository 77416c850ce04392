"""The IDX reader and the datasets: valid files, and each way a file can be wrong."""

import gzip

import numpy as np
import pytest

from normgrad.data import DatasetError, IdxError, load_dataset, read_idx, write_idx
from normgrad.data.datasets import IDX_FILES, load_idx_dir


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip(tmp_path, name, dtype):
    a = (np.arange(24).reshape(2, 3, 4) * 3 - 5).astype(dtype)
    write_idx(tmp_path / name, a)
    b = read_idx(tmp_path / name)
    assert b.dtype == np.dtype(dtype) and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def test_big_endian_layout_on_disk(tmp_path):
    write_idx(tmp_path / "x", np.array([1, 256], dtype=np.int32))
    raw = (tmp_path / "x").read_bytes()
    assert raw[:4] == bytes([0, 0, 0x0C, 1]) and raw[4:8] == b"\x00\x00\x00\x02"
    assert raw[8:] == b"\x00\x00\x00\x01\x00\x00\x01\x00"


def test_wrong_magic(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(IdxError, match=r"bad: not an IDX file \(wrong magic number 01020801\)"):
        read_idx(tmp_path / "bad")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(IdxError, match="empty: not an IDX file"):
        read_idx(tmp_path / "empty")


def test_truncated(tmp_path):
    write_idx(tmp_path / "x", np.zeros((10, 28, 28), np.uint8))
    data = (tmp_path / "x").read_bytes()
    (tmp_path / "short").write_bytes(data[:-100])
    with pytest.raises(IdxError, match=r"short: truncated: shape \(10, 28, 28\) needs 7840 bytes"):
        read_idx(tmp_path / "short")
    (tmp_path / "head").write_bytes(data[:6])
    with pytest.raises(IdxError, match="head: truncated header"):
        read_idx(tmp_path / "head")
    (tmp_path / "gz").write_bytes(gzip.compress(data)[:-20])
    with pytest.raises(IdxError, match="gz: corrupt or truncated gzip data"):
        read_idx(tmp_path / "gz")


def _idx_dir(tmp_path, n_train=12, n_train_labels=12, gz=True):
    rng = np.random.default_rng(0)
    sizes = {"x_train": n_train, "y_train": n_train_labels, "x_test": 5, "y_test": 5}
    for key, stem in IDX_FILES.items():
        n = sizes[key]
        arr = rng.integers(0, 256, (n, 28, 28)) if key.startswith("x") else rng.integers(0, 10, n)
        write_idx(tmp_path / (stem + (".gz" if gz else "")), arr.astype(np.uint8))
    return tmp_path


@pytest.mark.parametrize("gz", [True, False])
def test_idx_directory_dataset(tmp_path, gz):
    d = load_idx_dir(_idx_dir(tmp_path, gz=gz), "mnist")
    assert d.train.x.shape == (12, 784) and d.train.x.dtype == np.float32
    assert d.train.x.min() >= 0.0 and d.train.x.max() <= 1.0
    assert d.test.y.shape == (5,) and d.num_classes <= 10
    assert d.validation is None


def test_count_mismatch_names_both_files(tmp_path):
    message = r"train-images-idx3-ubyte.gz holds 12 images but .*labels-idx1-ubyte.gz holds 11"
    with pytest.raises(DatasetError, match=message):
        load_idx_dir(_idx_dir(tmp_path, n_train_labels=11), "mnist")


def test_missing_files_and_directories(tmp_path):
    with pytest.raises(DatasetError, match="missing t10k-labels-idx1-ubyte"):
        d = _idx_dir(tmp_path)
        (d / "t10k-labels-idx1-ubyte.gz").unlink()
        load_idx_dir(d, "mnist")
    with pytest.raises(DatasetError, match="no such directory"):
        load_dataset("fashion-mnist", tmp_path / "nope")
    with pytest.raises(DatasetError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")


def test_digits_needs_no_files():
    d = load_dataset("digits")
    assert d.train.x.shape == (1500, 64) and d.test.x.shape == (297, 64)
    assert d.num_classes == 10


def test_a_validation_split_is_held_out_of_the_training_images():
    d = load_dataset("digits")
    held = d.hold_out_validation(1000, 300)
    assert len(held.train) == 1000 and len(held.validation) == 300
    np.testing.assert_array_equal(held.train.x, d.train.x[:1000])
    np.testing.assert_array_equal(held.validation.x, d.train.x[-300:])
    assert held.test is d.test  # the test images are never used for validation
    with pytest.raises(DatasetError, match="digits has 1500 training images"):
        d.hold_out_validation(1000, 501)


def test_dataset_errors_are_usage_errors():
    from normgrad.errors import NormgradUsageError

    assert issubclass(DatasetError, NormgradUsageError)
    assert issubclass(IdxError, NormgradUsageError)

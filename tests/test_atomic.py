"""The atomic writer: a failure at any point leaves the old file whole and no temporary."""

import os

import numpy as np
import pytest

import normgrad.io
from normgrad import cli
from normgrad.io import atomic_open, atomic_write
from normgrad.train import load_verified, save_atomic


def test_writes_text_and_bytes(tmp_path):
    atomic_write(tmp_path / "a.txt", "héllo\n")
    atomic_write(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin"]


def test_new_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "f", "x")
    finally:
        os.umask(umask)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644


def test_a_failure_between_write_and_rename_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    atomic_write(path, "old")

    def crash(*args):  # the new content is written and fsynced; the rename fails
        raise OSError("power cut")

    monkeypatch.setattr(normgrad.io.os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        atomic_write(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temporary left


def test_an_exception_while_writing_keeps_the_old_file(tmp_path):
    path = tmp_path / "metrics.csv"
    atomic_write(path, "old")
    with pytest.raises(RuntimeError), atomic_open(path) as fh:
        fh.write("half a fi")
        raise RuntimeError("the writer failed")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_file_and_directory_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}") if os.path.exists("/proc") else fd)
        real_fsync(fd)

    monkeypatch.setattr(normgrad.io.os, "fsync", fsync)
    atomic_write(tmp_path / "f", "x")
    if os.path.exists("/proc"):
        assert synced == [False, True]  # the file, then its directory
    else:
        assert len(synced) == 2


def test_npz_saver_is_built_on_it(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    save_atomic(path, {"w": np.arange(3.0)})

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(normgrad.io.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_atomic(path, {"w": np.zeros(3)})
    np.testing.assert_array_equal(load_verified(path)["w"], np.arange(3.0))


def _record_atomic_writes(monkeypatch, root) -> list[str]:
    """The files renamed into place under ``root``. (``normgrad.io.os`` is the os module
    itself, so other writers show up too: Numba's on-disk cache of compiled kernels.)"""
    written = []
    real_replace = os.replace

    def replace(src, dst):
        if os.fspath(dst).startswith(os.fspath(root)):
            written.append(os.fspath(dst))
        real_replace(src, dst)

    monkeypatch.setattr(normgrad.io.os, "replace", replace)
    return written


def test_every_file_a_run_writes_is_written_atomically(tmp_path, monkeypatch):
    written = _record_atomic_writes(monkeypatch, tmp_path)
    out = tmp_path / "run"
    argv = ["train", "--steps", "20", "--checkpoint-every", "10", "--out", str(out),
            "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 0
    files = {p.name for p in out.iterdir()}
    assert files == {"config.json", "metrics.csv", "model.npz", "checkpoint.npz"}
    assert {os.path.basename(p) for p in written} == files


def test_every_file_an_experiment_writes_is_written_atomically(tmp_path, monkeypatch):
    from normgrad.experiments import ioffe2015

    written = _record_atomic_writes(monkeypatch, tmp_path)
    # one process: the recorder is patched into this one (workers write the same way)
    ioffe2015.run(tmp_path, steps=4, dataset="digits", jobs=1, progress=False, log=lambda *a: None)
    files = {str(p) for p in tmp_path.rglob("*") if p.is_file()}
    assert {"report.md", "series.csv", "fig1a_accuracy.png"} <= {os.path.basename(p) for p in files}
    assert files == set(written)

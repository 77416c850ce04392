"""MNIST's download path (pooch), against a local HTTP server on 127.0.0.1 serving small IDX
files made here: hash-checked, cached, mirrors tried in turn, failures named."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import sys
import threading

import numpy as np
import pytest

from normgrad import cli
from normgrad.data import DatasetError, download, load_dataset, write_idx
from normgrad.data.datasets import IDX_FILES
from normgrad.errors import MissingDependencyError

pytest.importorskip("pooch")


def _make_files(directory, n_train=12):
    """MNIST-shaped gzipped IDX files; returns {file name: "md5:..."} for them."""
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for key, stem in IDX_FILES.items():
        n = n_train if key.endswith("train") else 5
        arr = rng.integers(0, 256, (n, 28, 28)) if key.startswith("x") else rng.integers(0, 10, n)
        path = directory / f"{stem}.gz"
        write_idx(path, arr.astype(np.uint8))
        hashes[path.name] = "md5:" + hashlib.md5(path.read_bytes()).hexdigest()
    return hashes


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the test output stays readable
        pass


@contextlib.contextmanager
def _serve(directory):
    """An HTTP server on 127.0.0.1 serving ``directory``; yields its base URL and the list of
    paths requested."""
    requests = []

    class Handler(_QuietHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(directory))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", requests
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_proxy(monkeypatch):
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def test_download_then_cache(tmp_path, monkeypatch, no_proxy):
    hashes = _make_files(tmp_path / "served")
    monkeypatch.setattr(download, "MNIST_FILES", hashes)
    cache = tmp_path / "cache"
    with _serve(tmp_path / "served") as (url, requests):
        monkeypatch.setattr(download, "MNIST_MIRRORS", (url,))
        data = load_dataset("mnist", cache)
    assert sorted(requests) == sorted(f"/{name}" for name in hashes)
    assert data.name == "mnist" and data.train.x.shape == (12, 784) and len(data.test) == 5
    assert {p.name for p in cache.iterdir()} >= set(hashes)
    # the server is gone: the cached files serve
    again = load_dataset("mnist", cache)
    np.testing.assert_array_equal(again.train.x, data.train.x)


def test_a_failing_mirror_falls_back_and_a_bad_hash_is_refused(tmp_path, monkeypatch, no_proxy):
    hashes = _make_files(tmp_path / "served")
    monkeypatch.setattr(download, "MNIST_FILES", hashes)
    (tmp_path / "empty").mkdir()
    with _serve(tmp_path / "empty") as (bad, _), _serve(tmp_path / "served") as (good, _):
        monkeypatch.setattr(download, "MNIST_MIRRORS", (bad, good))  # 404s, then the files
        assert len(load_dataset("mnist", tmp_path / "a").train) == 12
        wrong = dict(hashes, **{"t10k-labels-idx1-ubyte.gz": "md5:" + "0" * 32})
        monkeypatch.setattr(download, "MNIST_FILES", wrong)
        with pytest.raises(DatasetError) as info:
            load_dataset("mnist", tmp_path / "b")
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte.gz" in message and bad in message and good in message
    assert "404" in message and "hash" in message.lower()
    assert not (tmp_path / "b" / "t10k-labels-idx1-ubyte.gz").exists()  # nothing unchecked kept


def test_no_network_is_a_usage_error_from_the_cli(tmp_path, monkeypatch, capsys, no_proxy):
    with _serve(tmp_path) as (url, _):
        pass  # the port is closed again: connections are refused at once
    monkeypatch.setattr(download, "MNIST_MIRRORS", (url,))
    (tmp_path / "m").mkdir()  # an explicit --data-dir must exist; the files are downloaded
    argv = ["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "m"), "--steps", "1",
            "--out", str(tmp_path / "run"), "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "could not download MNIST's" in err and "--data-dir" in err


def test_without_pooch_the_message_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pooch", None)
    with pytest.raises(MissingDependencyError, match=r"normgrad\[mnist\]"):
        load_dataset("mnist", tmp_path / "m")

"""MNIST's four IDX files, downloaded with pooch (``normgrad[mnist]``): hash-checked, cached.

Each file is fetched from the first mirror that serves it with the expected MD5 (the hashes
every MNIST loader checks, torchvision's among them) into the cache directory (``--data-dir``,
or pooch's per-user cache ``normgrad/mnist``); a file already there is not fetched again.
A download that fails or does not match its hash is a :class:`DatasetError` naming the file,
each mirror tried and what went wrong. Nothing here runs unless MNIST is asked for and its
files are missing.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from normgrad.errors import MissingDependencyError

#: Where MNIST is served: torchvision's mirror first, then Google's.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
#: The gzipped files and their MD5 hashes.
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "md5:d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "md5:9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "md5:ec29112dd5afa0611ce80d1b7f02629c",
}


def _pooch():
    try:
        import pooch
    except ImportError:
        raise MissingDependencyError(
            "downloading MNIST needs pooch: pip install 'normgrad[mnist]', or pass --data-dir "
            "with MNIST's four IDX files"
        ) from None
    return pooch


@contextlib.contextmanager
def _pooch_quiet(pooch):
    """pooch logs each download at INFO on stderr; normgrad's own ``log`` says it once."""
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def default_cache() -> Path:
    """pooch's per-user cache directory for normgrad's MNIST (e.g. ~/.cache/normgrad/mnist)."""
    return Path(_pooch().os_cache("normgrad")) / "mnist"


def fetch_mnist(
    directory: str | Path,
    *,
    mirrors: tuple[str, ...] | None = None,
    files: dict[str, str] | None = None,
    log=None,
) -> Path:
    """Download MNIST's files that ``directory`` lacks (created if need be); returns it.

    ``mirrors`` (base URLs ending in ``/``) and ``files`` (name -> ``"md5:..."`` or
    ``"sha256:..."``) default to :data:`MNIST_MIRRORS` and :data:`MNIST_FILES`.
    ``log(message)`` hears each download."""
    from normgrad.data.datasets import DatasetError

    pooch = _pooch()
    mirrors = MNIST_MIRRORS if mirrors is None else mirrors
    files = MNIST_FILES if files is None else files
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot create the MNIST directory {directory}: {exc}") from None
    for name, known_hash in files.items():
        if (directory / name).is_file():
            continue
        errors = []
        for base in mirrors:
            if log is not None:
                log(f"downloading {base}{name} to {directory}")
            try:
                with _pooch_quiet(pooch):  # normgrad says what it downloads (log)
                    pooch.retrieve(base + name, known_hash, fname=name, path=directory,
                                   progressbar=False)  # fmt: skip
                break
            except (OSError, ValueError) as exc:  # network/HTTP errors; a hash mismatch
                errors.append(f"{base}{name}: {' '.join(str(exc).split())}")
        else:  # one line, as every error the command line reports
            raise DatasetError(
                f"could not download MNIST's {name} into {directory}; tried "
                + "; ".join(errors)
                + " (without the internet: pass --data-dir with MNIST's four IDX files)"
            )
    return directory

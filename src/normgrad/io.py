"""Atomic file writes: at every instant a path holds the old complete file or the new one.

Every file a training run or an experiment writes goes through :func:`atomic_open` (or
:func:`atomic_write`, built on it): the content goes to a temporary file in the same
directory (so the rename cannot cross file systems), which is flushed and fsynced, renamed
over the target, and then the directory itself is fsynced so the rename survives a power
cut. A crash or an exception before the rename leaves the old file as it was; an exception
also removes the temporary file (a process killed outright may leave one behind, named
``.NAME.XXXXXXXX.tmp``, which is never read).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_open", "atomic_write"]


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, encoding: str = "utf-8") -> Iterator[IO]:
    """Open a temporary file to be renamed over ``path`` when the block ends without error.

    ``mode`` is ``"w"`` (text, ``encoding``) or ``"wb"``. Usable with anything that writes
    to a file object: ``csv.writer(fh)``, ``fig.savefig(fh, format="png")``, ``np.savez``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb'; got {mode!r}")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # O_EXCL: never write into a file someone else opened; 0o666 & ~umask, as open() does.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        text = {"encoding": encoding, "newline": ""} if mode == "w" else {}
        with open(fd, mode, **text) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():  # an exception before the rename: drop the half-written file
            tmp.unlink()
    _fsync_directory(path.parent)


def atomic_write(path: str | Path, data: bytes | str, *, encoding: str = "utf-8") -> None:
    """Write ``data`` (bytes, or text in ``encoding``) to ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data.encode(encoding) if isinstance(data, str) else data)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; Windows cannot open a directory)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

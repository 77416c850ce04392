"""Checkpoints that survive a crash: atomic writes and a checksum verified on load.

A checkpoint is one ``.npz`` holding named arrays plus a ``__checksum__`` (SHA-256 over the
sorted names, dtypes, shapes and bytes), written with :func:`normgrad.io.atomic_open`, so
at every instant the path holds either the previous complete checkpoint or the new one.
The final ``model.npz`` of a run is written the same way.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

from normgrad.errors import NormgradUsageError
from normgrad.io import atomic_open

CHECKSUM = "__checksum__"


class CheckpointError(NormgradUsageError):
    """A run directory or checkpoint that cannot be loaded or fails verification; names
    the file."""


def checksum(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_atomic(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` (plus their checksum) to ``path`` as ``.npz``, atomically."""
    data = {k: np.asarray(v) for k, v in arrays.items()}
    data[CHECKSUM] = np.array(checksum(data))
    with atomic_open(path, "wb") as fh:
        np.savez(fh, **data)


def load_verified(path: str | Path) -> dict[str, np.ndarray]:
    """Load a file written by :func:`save_atomic`; raise CheckpointError if it is damaged."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from None
    stored = arrays.pop(CHECKSUM, None)
    if stored is None:
        raise CheckpointError(f"{path}: no checksum; not a normgrad checkpoint")
    if str(stored) != checksum(arrays):
        raise CheckpointError(f"{path}: checksum mismatch; the file is corrupt")
    return arrays

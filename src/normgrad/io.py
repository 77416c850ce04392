"""Atomic file writes: at every instant a path holds the old complete file or the new one.

Every file a training run or an experiment writes goes through :func:`atomic_open` (or
:func:`atomic_write`, built on it): the content goes to a temporary file in the same
directory (so the rename cannot cross file systems), which is flushed and fsynced, renamed
over the target, and then the directory itself is fsynced so the rename survives a power
cut. A crash or an exception before the rename leaves the old file as it was; an exception
also removes the temporary file (a process killed outright may leave one behind, named
``.NAME.XXXXXXXX.tmp``, which is never read and which :func:`remove_stale_temporaries`
deletes when a run next starts in that directory).

Fault injection (for the test suite): with ``NORMGRAD_IO_FAULT=STAGE:NAME`` in the
environment, the process kills itself with SIGKILL when writing a file called ``NAME``
reaches ``STAGE``: ``write`` (after half the data is written), ``fsync`` (the data is
written, not yet synced), ``rename`` (synced, not yet renamed) or ``dirsync`` (renamed, the
directory not yet synced). ``STAGE:NAME:K`` kills at the K-th such write (1-based) instead
of the first; ``STAGE:NAME:K:stop`` stops the process there (SIGSTOP) instead, as a hung
disk would. Nothing else reads the variable.

:func:`check_output_dir` and :func:`check_output_file` tell, before anything is created,
whether a path a user gave can be written: one line naming the option and the reason.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from normgrad.errors import NormgradUsageError

__all__ = [
    "FAULT_ENV",
    "atomic_open",
    "atomic_write",
    "check_output_dir",
    "check_output_file",
    "remove_stale_temporaries",
]

#: The environment variable of the fault hook (the module docstring).
FAULT_ENV = "NORMGRAD_IO_FAULT"
_FAULT_STAGES = ("write", "fsync", "rename", "dirsync")
_fault_counts: dict[str, int] = {}


def _fault_point(stage: str, path: Path) -> None:
    """SIGKILL this process if the fault hook names this stage of writing ``path``."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    parts = spec.split(":")
    if (
        len(parts) not in (2, 3, 4)
        or parts[0] not in _FAULT_STAGES
        or (len(parts) == 4 and parts[3] not in ("kill", "stop"))
    ):
        raise ValueError(
            f"{FAULT_ENV} must be STAGE:NAME[:K[:kill|stop]] with STAGE one of "
            f"{', '.join(_FAULT_STAGES)}; got {spec!r}"
        )
    if parts[0] != stage or parts[1] != path.name:
        return
    key = f"{stage}:{path.name}"  # each stage is reached once per write of the file
    _fault_counts[key] = _fault_counts.get(key, 0) + 1
    if _fault_counts[key] == (int(parts[2]) if len(parts) >= 3 else 1):
        stop = len(parts) == 4 and parts[3] == "stop"
        os.kill(os.getpid(), signal.SIGSTOP if stop else signal.SIGKILL)


class _FaultingFile:
    """Wraps a file so that the fault hook can strike half-way through the data."""

    def __init__(self, fh, path: Path):
        self._fh, self._path, self._written = fh, path, 0

    def write(self, data):
        if self._written == 0 and len(data) > 1:
            # Half of the first write reaches the file, then the hook strikes.
            half = len(data) // 2
            self._fh.write(data[:half])
            self._fh.flush()
            _fault_point("write", self._path)
            self._written += self._fh.write(data[half:]) or 0
            return len(data)
        self._written += len(data)
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)


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
            yield _FaultingFile(fh, path) if os.environ.get(FAULT_ENV) else fh
            fh.flush()
            _fault_point("fsync", path)
            os.fsync(fh.fileno())
        _fault_point("rename", path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():  # an exception before the rename: drop the half-written file
            tmp.unlink()
    _fault_point("dirsync", path)
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


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{8}\.tmp$")


def remove_stale_temporaries(directory: str | Path, names: tuple[str, ...]) -> list[Path]:
    """Delete the temporary files :func:`atomic_open` left in ``directory`` for the files
    called ``names`` (a process killed mid-write leaves them); returns what was removed.
    Call it only where no other process is writing those files."""
    directory = Path(directory)
    removed = []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        match = _TEMPORARY.match(entry.name)
        if match and match["name"] in names and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _writable_problem(directory: Path) -> str | None:
    """Why files cannot be created in the existing ``directory``, or None."""
    if not directory.is_dir():
        return f"{directory} is not a directory"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"{directory} is not writable"
    if os.name == "posix" and os.statvfs(directory).f_flag & os.ST_RDONLY:
        return f"{directory} is on a read-only file system"
    return None


def _existing_ancestor(path: Path) -> Path:
    for parent in (path, *path.parents):
        if parent.exists():
            return parent
    return Path(".")


def check_output_dir(path: str | Path, option: str) -> Path:
    """``path`` as a directory a command can create (or use) and write files in, checked
    without creating anything; NormgradUsageError naming ``option`` if not (a file, under
    a file, a read-only place)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NormgradUsageError(f"{option} {path}: is a file, not a directory")
    base = _existing_ancestor(path.absolute())
    problem = _writable_problem(base)
    if problem is not None:
        raise NormgradUsageError(f"{option} {path}: cannot be written ({problem})")
    return path


def check_output_file(path: str | Path, option: str) -> Path:
    """``path`` as a file a command can write (its directory must exist), checked without
    creating anything; NormgradUsageError naming ``option`` if not."""
    path = Path(path)
    what = f"cannot write {option} {path}"
    if path.is_dir():
        raise NormgradUsageError(f"{what}: it is a directory; give a file name")
    parent = path.absolute().parent
    if not parent.exists():
        missing = str(path.parent)
        raise NormgradUsageError(f"{what}: the output directory {missing!r} does not exist")
    problem = _writable_problem(parent)
    if problem is not None:
        raise NormgradUsageError(f"{what}: {problem}")
    return path

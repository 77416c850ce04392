"""Importing a learner's file as the course notebook would.

Inside a package (``cs231n/layers.py`` next to ``cs231n/__init__.py``) it is imported as
``cs231n.layers`` with the package root on ``sys.path``, so ``from cs231n.layer_utils
import *`` and ``from .layer_utils import ...`` work; a loose file gets its folder first on
``sys.path`` and its folder's parent last. A missing course sibling is named; a Python 2
file is refused in one line; old years' ``past.builtins`` is stood in for where the
``future`` package is not installed. The import runs under the grader's time limit, and
what it prints stays out of the report. :class:`LearnerPath` puts everything back
afterwards.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import sys
from dataclasses import dataclass
from pathlib import Path

from normgrad.errors import NormgradUsageError
from normgrad.learn import isolation

#: Seconds one learner call (or the import) may take (``--timeout``).
DEFAULT_TIMEOUT = 10.0


class UsageError(NormgradUsageError):
    """Input the grader cannot grade (a file that does not import, no function it knows):
    a one-line message, exit code 2."""


_PYTHON2_SIGNS = (
    ("Missing parentheses in call to 'print'", "a print statement"),
    ("Missing parentheses in call to 'exec'", "an exec statement"),
    ("multiple exception types must be parenthesized", "'except X, e:'"),
    ("leading zeros in decimal integer literals", "an old-style octal literal"),
)


@dataclass
class _Package:
    """Where a learner's file sits.

    Attributes:
        path: the file, resolved.
        roots: put first on sys.path while it is graded (the package root, or the file's
            folder, as the course notebook runs from the assignment's folder).
        fallback: put last on sys.path (a loose file's grandparent folder, so that a
            ``cs231n/`` folder without ``__init__.py`` imports as ``cs231n.layer_utils``
            without shadowing anything installed); or None.
        own: the learner's folder: modules grading imported from it are taken back.
        module_name: the name it is imported under (``cs231n.layers`` inside a package).
        package: the package it is in, or None.
    """

    path: Path
    roots: list[str]
    fallback: str | None
    own: str
    module_name: str
    package: str | None


def _locate(path: Path) -> _Package:
    path = path.resolve()
    parts = []
    d = path.parent
    while (d / "__init__.py").is_file():
        parts.insert(0, d.name)
        d = d.parent
    if parts:
        name, package = ".".join([*parts, path.stem]), ".".join(parts)
        return _Package(path, [str(d)], None, str(d / parts[0]), name, package)
    # A loose file: its neighbours import as ``layer_utils``; a folder named like the
    # course's package (cs231n/ without __init__.py) imports as ``cs231n.layer_utils``.
    name = f"_normgrad_learner_{path.stem}"
    return _Package(path, [str(path.parent)], str(path.parent.parent), str(path.parent), name, None)


def _missing_module(exc: ModuleNotFoundError, pkg: _Package) -> str:
    name = exc.name or str(exc)
    first = name.split(".")[0]
    course = {pkg.path.parent.name} | ({pkg.package.split(".")[0]} if pkg.package else set())
    if first in course or name in {p.stem for p in pkg.path.parent.glob("*.py")}:
        rel = Path(*name.split(".")[1:]) if first in course else Path(name)
        return (
            f"{pkg.path.name} imports {name}, a file of the course that is not there: "
            f"put {rel}.py next to {pkg.path.name} (in {pkg.path.parent})"
        )
    hint = " (pip install future)" if first in {"past", "future"} else ""
    return f"{pkg.path.name} imports {name}, which is not installed here{hint}"


def load_module(path: Path, timeout: float = DEFAULT_TIMEOUT):
    """Import the learner's file as the course notebook would; any failure is a UsageError
    with one line. The package root stays on sys.path (see :class:`LearnerPath`)."""
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    if path.suffix != ".py":
        raise UsageError(f"cannot import {path}: not a Python file (expected FILE.py)")
    pkg = _locate(path)
    source = path.read_bytes()
    try:
        compile(source, str(pkg.path), "exec")
    except SyntaxError as exc:
        for sign, what in _PYTHON2_SIGNS:
            if sign in (exc.msg or ""):
                raise UsageError(
                    f"{path} is Python 2 code ({what} at line {exc.lineno}); the grader runs "
                    f"Python 3: convert it (2to3 -w {path.name}) and grade it again"
                ) from None
        raise UsageError(f"{path} does not parse: {exc.msg} (line {exc.lineno})") from None
    except ValueError as exc:  # null bytes
        raise UsageError(f"{path} does not parse: {exc}") from None
    files = frozenset({str(pkg.path)})
    try:
        # What the course's files print while importing (fast_layers' "run python setup.py
        # build_ext") is not the learner's report.
        with isolation.time_limit(timeout), contextlib.redirect_stdout(io.StringIO()):
            if pkg.package:
                importlib.import_module(pkg.package)
            spec = importlib.util.spec_from_file_location(pkg.module_name, pkg.path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[pkg.module_name] = module  # dataclasses and pickling look it up
            spec.loader.exec_module(module)
    except isolation.GradingInterrupted:
        raise
    except isolation.LearnerTimeout as exc:
        where = isolation.learner_line(exc.__traceback__, files)
        raise UsageError(
            f"{path} timed out after {timeout:g} s while importing"
            + (f" (stopped at {where})" if where else "")
        ) from None
    except ModuleNotFoundError as exc:
        raise UsageError(_missing_module(exc, pkg)) from None
    except BaseException as exc:
        where = isolation.learner_line(exc.__traceback__, files)
        at = f" (at {where})" if where else ""
        raise UsageError(f"{path} failed to import: {type(exc).__name__}: {exc}{at}") from None
    return module


class LearnerPath:
    """While grading a file: its package root on sys.path, and afterwards every module
    imported from the learner's folders removed again (another file may have its own
    ``cs231n``)."""

    def __init__(self, path: Path):
        self.pkg = _locate(path)

    def __enter__(self):
        self.before = set(sys.modules)
        self.added = [r for r in self.pkg.roots if r not in sys.path]
        sys.path[:0] = self.added
        fallback = self.pkg.fallback
        self.appended = fallback if fallback and fallback not in sys.path else None
        if self.appended:
            sys.path.append(self.appended)
        _python2_builtins()
        return self.pkg

    def __exit__(self, *exc):
        for root in [*self.added, self.appended]:
            if root and root in sys.path:
                sys.path.remove(root)
        own = self.pkg.own.rstrip("/") + "/"
        for name in set(sys.modules) - self.before:  # only what grading imported
            module = sys.modules[name]
            places = [getattr(module, "__file__", None) or "", *getattr(module, "__path__", [])]
            ours = any(f"{p}/".startswith(own) for p in places)
            if name == self.pkg.module_name or ours or name in _SHIMS:
                del sys.modules[name]
        return False


_SHIMS = ("past", "past.builtins")


def _python2_builtins() -> None:
    """Old course years' files import ``from past.builtins import xrange`` (the
    ``future`` package); where it is not installed, the few names they use stand in."""
    if "past" in sys.modules or importlib.util.find_spec("past") is not None:
        return
    import builtins
    import functools
    import types

    past = types.ModuleType("past")
    shim = types.ModuleType("past.builtins")
    shim.__dict__.update(
        xrange=range, basestring=str, unicode=str, long=int, raw_input=builtins.input,
        reduce=functools.reduce,
    )  # fmt: skip
    past.builtins = shim
    sys.modules["past"], sys.modules["past.builtins"] = past, shim

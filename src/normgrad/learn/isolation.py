"""Running a learner's function so that nothing it does can stop or spoil the grading.

:func:`call` runs one learner call and always returns an :class:`Outcome`: its value, or
one line saying what went wrong (an exception of any kind, ``SystemExit`` and
``KeyboardInterrupt`` raised by the learner's code included, or a time limit passed), with
the learner's own line where it happened. Output the learner prints is kept, not shown;
``input()`` reads an empty stdin; NumPy's floating-point warnings are silenced.

The time limit is enforced in the calling thread, with no subprocess (a call costs
microseconds more than a plain call):

- in the main thread on Unix, ``signal.setitimer`` raises :class:`LearnerTimeout` in the
  learner's code (an outer timer, such as pytest-timeout's, is re-armed afterwards);
- in any other thread (some notebook front ends), a watchdog thread raises it there with
  ``PyThreadState_SetAsyncExc``.

Either way Python code is stopped at its next bytecode; a single long NumPy call is
stopped when it returns. A real Ctrl-C during grading raises :class:`GradingInterrupted`,
which the grader turns into a report of what was graded so far.

:func:`fresh` and :func:`same` give every call its own copies and detect a call that
writes into what it was given.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import io
import signal
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path

import numpy as np


class LearnerTimeout(BaseException):
    """Raised into the learner's code when its time limit has passed."""


class GradingInterrupted(KeyboardInterrupt):
    """The person running the grader pressed Ctrl-C (not the learner's code)."""


@dataclass
class Outcome:
    """What one learner call did.

    Attributes:
        value: what it returned (None when it did not return).
        status: ``"ok"``, ``"crashed"``, ``"timed out"`` or ``"not implemented"``
            (it raised NotImplementedError).
        message: one line, e.g. ``"raised ValueError: bad (at layers.py:12: dx = ...)"``.
        printed: what it wrote to stdout.
    """

    value: object = None
    status: str = "ok"
    message: str = ""
    printed: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def learner_line(tb, files: frozenset[str]) -> str:
    """``"layers.py:12: dx = ..."``: the last frame of ``tb`` in one of the learner's files."""
    frames = [f for f in traceback.extract_tb(tb) if f.filename in files]
    if not frames:
        return ""
    f = frames[-1]
    where = f"{Path(f.filename).name}:{f.lineno}"
    return f"{where}: {f.line}" if f.line else where


def _raise_timeout(signum, frame):
    raise LearnerTimeout


def _raise_interrupted(signum, frame):
    raise GradingInterrupted


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise LearnerTimeout in this thread's code after ``seconds``, and again every tenth
    of that while it has not returned (learner code that catches every exception does not
    get to run on)."""
    again = max(seconds / 10, 0.01)
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        start = time.monotonic()
        old_alarm = signal.signal(signal.SIGALRM, _raise_timeout)
        old_int = signal.signal(signal.SIGINT, _raise_interrupted)
        outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds, again)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_alarm)
            signal.signal(signal.SIGINT, old_int)
            if outer > 0:  # someone else's timer was running: give it back what is left
                left = outer - (time.monotonic() - start)
                signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3))
        return
    tid = threading.get_ident()
    lock = threading.Lock()
    done = threading.Event()
    fired = []

    def watch():
        wait = seconds
        while not done.wait(wait):
            with lock:
                if done.is_set():
                    return
                fired.append(True)
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(tid), ctypes.py_object(LearnerTimeout)
                )
            wait = again

    watchdog = threading.Thread(target=watch, daemon=True, name="normgrad-time-limit")
    watchdog.start()
    try:
        yield
    finally:
        with lock:
            done.set()
            if fired:  # fired as the call returned: take back a pending exception
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid), None)
        watchdog.join()


def call(fn, args: tuple, *, name: str, files: frozenset[str], timeout: float) -> Outcome:
    """Run ``fn(*args)`` under a time limit of ``timeout`` seconds; never raises, except
    :class:`GradingInterrupted` when the person grading presses Ctrl-C."""
    printed = io.StringIO()
    stdin = sys.stdin
    try:
        sys.stdin = io.StringIO("")
        with (
            contextlib.redirect_stdout(printed),
            warnings.catch_warnings(),
            np.errstate(all="ignore"),
        ):
            warnings.simplefilter("ignore")
            with time_limit(timeout):
                value = fn(*args)
    except GradingInterrupted:
        raise
    except LearnerTimeout as exc:
        where = learner_line(exc.__traceback__, files)
        at = f"; stopped at {where}" if where else ""
        return Outcome(None, "timed out", f"{name} timed out after {timeout:g} s{at}", "")
    except BaseException as exc:  # SystemExit, KeyboardInterrupt: the learner's, reported
        where = learner_line(exc.__traceback__, files)
        at = f" (at {where})" if where else ""
        status = "not implemented" if isinstance(exc, NotImplementedError) else "crashed"
        text = str(exc)
        what = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        return Outcome(None, status, f"{name} raised {what}{at}", printed.getvalue())
    finally:
        sys.stdin = stdin
    return Outcome(value, "ok", "", printed.getvalue())


def fresh(obj):
    """A deep copy of ``obj`` (the object itself when it cannot be copied)."""
    try:
        return copy.deepcopy(obj)
    except Exception:
        return obj


def same(a, b, depth: int = 0) -> bool:
    """Whether ``a`` still equals its copy ``b``: arrays element by element (NaN equal to
    NaN), containers and objects member by member; what cannot be compared counts as same."""
    if depth > 8:
        return True
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return False
        if a.shape != b.shape:
            return False
        try:
            return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
        except Exception:
            return True
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(same(a[k], b[k], depth + 1) for k in a)
        )
    if isinstance(a, list | tuple):
        return (
            type(a) is type(b)
            and len(a) == len(b)
            and all(same(x, y, depth + 1) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, int | float | complex | str | bytes | bool | type(None)):
        return a == b or (a != a and b != b)  # NaN is NaN
    if is_dataclass(a) and not isinstance(a, type):
        return all(
            same(getattr(a, f.name, None), getattr(b, f.name, None), depth + 1) for f in fields(a)
        )
    members = getattr(a, "__dict__", None)
    if members is not None and hasattr(b, "__dict__"):
        return same(members, b.__dict__, depth + 1)
    return True

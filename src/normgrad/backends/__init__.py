"""Backends as objects: the NumPy implementation, or fused Numba kernels (``normgrad[fast]``).

A backend is an object with ``name``, ``supports(layout)``, ``forward(x, gamma, beta,
layout, *, eps, bessel, stats=None, comm=None) -> (y, cache, moments)`` and
``backward(dy, cache) -> (dx, dgamma, dbeta)``. :func:`choose` picks one *once* per forward
call; the cache it makes carries it (``cache.backend``), so the backward always runs on the
forward's implementation, and each backend's cache holds only what that backend needs.

``backend="auto"`` (the default, or the ``NORMGRAD_BACKEND`` environment variable) picks
Numba when it can be imported and the array has at least ``AUTO_MIN_SIZE`` elements, and
NumPy otherwise, silently: below that size a kernel call's fixed cost (tens of
microseconds) exceeds NumPy's. ``backend="numba"`` insists, whatever the size, and names
the extra to install when Numba is missing; ``backend="numpy"`` never uses Numba.
Nothing here imports Numba until a fused kernel is actually called.
"""

from __future__ import annotations

import functools
import importlib.util
import os

from normgrad.backends.numba_backend import NUMBA, FusedCache, NumbaBackend
from normgrad.backends.numpy_backend import NUMPY, NumpyBackend, NumpyCache

__all__ = [
    "NUMBA",
    "NUMPY",
    "FusedCache",
    "NumbaBackend",
    "NumpyBackend",
    "NumpyCache",
    "choose",
    "numba_available",
    "resolve",
]

BACKENDS = ("auto", "numpy", "numba")
ENV_VAR = "NORMGRAD_BACKEND"
AUTO_MIN_SIZE = 1 << 15


@functools.cache
def numba_available() -> bool:
    """Whether Numba can be imported (without importing it). Asked once per process: the
    search of sys.path costs about 40 us, which every call of an op used to pay."""
    return importlib.util.find_spec("numba") is not None


def resolve(backend: str | None = None, size: int | None = None) -> str:
    """``"numpy"`` or ``"numba"``: what ``backend`` (or the default) selects for an array of
    ``size`` elements."""
    name = backend if backend is not None else os.environ.get(ENV_VAR, "auto")
    if name not in BACKENDS:
        source = "backend" if backend is not None else f"the environment variable {ENV_VAR}"
        raise ValueError(f"{source} must be one of {', '.join(BACKENDS)}; got {name!r}")
    if name == "numpy":
        return "numpy"
    if name == "auto" and size is not None and size < AUTO_MIN_SIZE:
        return "numpy"
    if numba_available():
        return "numba"
    if name == "numba":
        raise ImportError("backend='numba' needs Numba: pip install 'normgrad[fast]'")
    return "numpy"


def choose(backend=None, size: int | None = None, layout=None, *, comm=None):
    """The backend object to run a call on: ``backend`` is a name (as for :func:`resolve`),
    a backend object, or None (the default). Synchronized statistics (``comm``) and layouts
    the fused kernels do not cover run on NumPy."""
    if backend is not None and not isinstance(backend, str):
        return backend
    name = resolve(backend, size)
    if name == "numba" and comm is None and (layout is None or NUMBA.supports(layout)):
        return NUMBA
    return NUMPY

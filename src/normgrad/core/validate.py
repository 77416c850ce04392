"""Checks on what the user passed, with messages that name the argument.

Every public function validates its inputs here before any arithmetic, so a bad call
fails with a ValueError or TypeError that says which argument was wrong, what was
expected and what was given. Nothing here modifies its input.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

#: Floating dtypes the core accepts. float16 is computed in float32 (docs/design.md §10).
SUPPORTED_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _describe(a: object) -> str:
    if isinstance(a, np.ndarray):
        return f"an array of dtype {a.dtype} and shape {a.shape}"
    return f"{type(a).__name__} {a!r}"


def as_float_array(name: str, a: object) -> np.ndarray:
    """Return ``a`` as a floating ndarray (no copy when it already is one).

    Raises TypeError for integer, boolean, complex, object and other non-float data:
    silently normalising integers would hide a bug in the caller more often than help.
    A masked array with masked values is refused (its mask would be ignored); one without,
    an ``np.matrix`` or another subclass is used as a plain ndarray; a byte-swapped
    (big-endian) array is converted to native byte order (a copy).
    """
    if isinstance(a, np.ma.MaskedArray):
        if np.ma.is_masked(a):
            raise TypeError(
                f"{name} is a masked array with {int(np.ma.count_masked(a))} masked values; "
                "normalization would ignore the mask: pass the values to use, e.g. "
                f"{name}.filled(...) or the unmasked rows"
            )
        arr = np.asarray(a.data)
    elif isinstance(a, np.ndarray):
        arr = a if type(a) is np.ndarray else np.asarray(a)  # np.matrix: plain 2-D array
    else:
        try:
            arr = np.asarray(a)
        except Exception as exc:  # pragma: no cover - numpy's own message is kept
            raise TypeError(f"{name} must be a floating-point array; got {_describe(a)}") from exc
    if not arr.dtype.isnative and arr.dtype.newbyteorder("=") in SUPPORTED_DTYPES:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"{name} must be a floating-point array (float16, float32 or float64); "
            f"got dtype {arr.dtype}"
        )
    return arr


def check_comm(comm: object) -> None:
    """``comm`` must be None or an mpi4py-like communicator (Get_size, Allgather,
    Allreduce)."""
    if comm is None:
        return
    missing = [m for m in ("Get_size", "Allgather", "Allreduce") if not hasattr(comm, m)]
    if missing:
        raise TypeError(
            f"comm must be an mpi4py communicator such as MPI.COMM_WORLD (with Get_size, "
            f"Allgather, Allreduce) or None; got {_describe(comm)}"
        )


def check_eps(eps: object) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a positive real number; got {_describe(eps)}")
    eps = float(eps)
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a positive finite number; got {eps!r}")
    return eps


def check_momentum(momentum: object) -> float:
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
        raise TypeError(f"momentum must be a number in [0, 1]; got {_describe(momentum)}")
    momentum = float(momentum)
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1]; got {momentum!r}")
    return momentum


def check_axis(name: str, axis: object, ndim: int, shape: tuple[int, ...]) -> int:
    """Normalise a possibly negative axis index; raise if it is not an int in range."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {_describe(axis)}")
    axis = int(axis)
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"{name}={axis} is out of range for an input of shape {shape} "
            f"(expected an axis in [{-ndim}, {ndim - 1}])"
        )
    return axis % ndim


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int; got {_describe(value)}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int; got {value}")
    return int(value)


def check_min_ndim(name: str, x: np.ndarray, min_ndim: int, expected: str) -> None:
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have shape {expected}; got shape {x.shape}")


def check_param(name: str, p: object, shape: tuple[int, ...], what: str) -> np.ndarray | None:
    """Validate an affine parameter (gamma or beta): None, or a float array of ``shape``."""
    if p is None:
        return None
    arr = as_float_array(name, p)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape} ({what}); got shape {arr.shape}")
    return arr


def check_running(
    name: str, r: object, shape: tuple[int, ...], *, written: bool = True
) -> np.ndarray | None:
    """Validate a running-statistics array: an ndarray, but not a masked array or np.matrix,
    which would not take an update as expected. ``written``: it will be updated in place (in
    training mode), so it must be writeable. Eval mode only reads it."""
    if r is None:
        return None
    if not isinstance(r, np.ndarray) or isinstance(r, np.ma.MaskedArray | np.matrix):
        raise TypeError(
            f"{name} must be a NumPy array (it is updated in place); got {_describe(r)}"
            + ("" if not isinstance(r, np.ndarray) else f" of type {type(r).__name__}")
        )
    as_float_array(name, r)
    if r.shape != shape:
        raise ValueError(f"{name} must have shape {shape} (one value per channel); got {r.shape}")
    if written and not r.flags.writeable:
        raise ValueError(f"{name} must be writeable: it is updated in place in training mode")
    return r


def check_enough_values(spec, shape: tuple[int, ...], count: int, bessel: bool) -> None:
    """One value per group has no variance to normalise by (and M - 1 = 0 with Bessel).

    ``spec`` is the op's :class:`~normgrad.core.table.OpSpec` (its ``groups`` words name
    the groups in the message).
    """
    if count <= 1:
        where = spec.groups
        reason = " with bessel=True" if bessel else " when training" if spec.running_stats else ""
        raise ValueError(
            f"Expected more than 1 value {where}{reason}, got input size {tuple(shape)} "
            f"({count} value{'s' if count != 1 else ''} {where})"
        )

"""Batch norm's training step for a small ``(N, C)`` input, without the per-call overhead.

A fully connected network's batch norm sees ``(N, C)`` arrays of a few thousand values
(the paper's network: 60 x 100). There the generic path of :mod:`normgrad.core.ops` (check
every argument, build a layout, choose a backend, make a frozen cache) costs about twice
the arithmetic itself. :class:`~normgrad.nn.norms.BatchNorm` checks its input once per
shape and then calls these two functions, which run *the same NumPy operations in the same
order* as the NumPy backend's forward (:func:`normgrad.backends.numpy_backend.normalize_forward`)
and Thorey-form backward (``_batch_norm_backward``), so the results are bit for bit the
op's (tests/test_nn_population.py checks it).

With Numba installed (``normgrad[fast]``) each pass is instead one call of a fused serial
kernel (:mod:`normgrad.nn.batch_norm_2d_kernels`), equal to the NumPy path to float
rounding; ``NORMGRAD_BACKEND=numpy`` keeps the NumPy path, as it does for the ops.

Precision is the op's: statistics and reductions accumulate in float64; a float32 x is
centred for its squares by subtracting the float64 mean in two float32 parts, and xhat and y
are computed in float64 and rounded once (docs/design.md §10).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from normgrad import backends
from normgrad.backends.numpy_backend import center

ACC = np.float64


def fused_available() -> bool:
    """Whether the step runs on the fused kernels: Numba is installed and
    ``NORMGRAD_BACKEND`` does not say ``numpy``."""
    return os.environ.get(backends.ENV_VAR) != "numpy" and backends.numba_available()


class Saved(NamedTuple):
    """What the forward keeps for the backward: xhat ``(N, C)`` in x's dtype, the batch
    mean and biased variance and ``inv_std`` ``(C,)`` float64, gamma ``(C,)`` or None."""

    xhat: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    inv_std: np.ndarray
    gamma: np.ndarray | None
    has_beta: bool
    fused: bool = False


def forward(x, gamma, beta, eps: float, running=None, weight: float = 0.0, fused=None):
    """``(y, saved)`` for x ``(N, C)`` (float32 or float64, N >= 2), gamma/beta ``(C,)`` of
    x's dtype or None. ``running``: ``(running_mean, running_var)`` updated in place with
    the batch's weight ``weight`` (PyTorch's convention, unbiased variance), or None.
    ``fused``: run the Numba kernel (default: :func:`fused_available`)."""
    if fused is None:
        fused = fused_available()
    if fused:
        return _fused_forward(x, gamma, beta, eps, running, weight)
    dtype = x.dtype
    n = x.shape[0]
    mean = np.mean(x, axis=0, keepdims=True, dtype=ACC)
    xhat = center(x, mean, dtype)  # the op's own centring: the float64 mean in two parts
    out = np.empty(x.shape, dtype)
    m2 = np.sum(np.square(xhat, out=out), axis=0, keepdims=True, dtype=ACC)
    var = m2 / n
    inv_std = 1.0 / np.sqrt(var + eps)
    if dtype == np.float64:
        xhat *= inv_std
        source, y = xhat, out
    else:  # xhat and y each rounded once from float64, as the op's NumPy backend does
        source = np.subtract(x, mean, dtype=ACC)
        source *= inv_std
        xhat[...] = source
        y = source  # y in float64, in place of the float64 xhat, then rounded into out
    if gamma is not None:
        np.multiply(source, gamma.reshape(1, -1), out=y)
    elif y is not source:
        np.copyto(y, source)
    if beta is not None:
        y += beta.reshape(1, -1)
    if y is not out:
        out[...] = y
    if running is not None:
        running_mean, running_var = running
        batch_mean = mean.reshape(-1)
        unbiased_var = m2.reshape(-1) / (n - 1)
        running_mean[...] = (1.0 - weight) * running_mean + weight * batch_mean
        running_var[...] = (1.0 - weight) * running_var + weight * unbiased_var
    g = None if gamma is None else gamma.reshape(1, -1)
    return out, Saved(xhat, mean, var, inv_std, g, beta is not None)


def backward(dy, saved: Saved, param_dtype):
    """``(dx, dgamma, dbeta)`` for dy ``(N, C)`` of x's dtype: the closed form
    ``dx = gamma * r / N * (N * dy - dbeta - xhat * dgamma)``."""
    if saved.fused:
        return _fused_backward(dy, saved, param_dtype)
    xhat, dtype = saved.xhat, saved.xhat.dtype
    n = xhat.shape[0]
    sum_dy = np.sum(dy, axis=0, keepdims=True, dtype=ACC)
    sum_dy_xhat = np.sum(dy * xhat, axis=0, keepdims=True, dtype=ACC)
    dgamma = None if saved.gamma is None else sum_dy_xhat.reshape(-1).astype(param_dtype)
    dbeta = sum_dy.reshape(-1).astype(param_dtype) if saved.has_beta else None
    dx = dy * dtype.type(n)
    dx -= sum_dy.astype(dtype)
    dx -= xhat * (1.0 * sum_dy_xhat).astype(dtype)
    inv_std = saved.inv_std.astype(dtype)
    scale = inv_std / n if saved.gamma is None else saved.gamma * inv_std / n
    dx *= scale.astype(dtype)
    return dx, dgamma, dbeta


def _fused_forward(x, gamma, beta, eps, running, weight):
    from normgrad.nn import batch_norm_2d_kernels as kernels

    c = x.shape[1]
    x = np.ascontiguousarray(x)
    out, xhat = np.empty_like(x), np.empty_like(x)
    mean, var, inv_std = np.empty(c), np.empty(c), np.empty(c)
    g = np.ones(c, x.dtype) if gamma is None else gamma
    b = np.zeros(c, x.dtype) if beta is None else beta
    update = running is not None
    rm, rv = running if update else (mean, var)  # not written when update is False
    kernels.forward(x, g, b, float(eps), out, xhat, mean, var, inv_std, rm, rv,
                    float(weight), update)  # fmt: skip
    return out, Saved(xhat, mean, var, inv_std, gamma, beta is not None, fused=True)


def _fused_backward(dy, saved, param_dtype):
    from normgrad.nn import batch_norm_2d_kernels as kernels

    xhat = saved.xhat
    c = xhat.shape[1]
    dy = np.ascontiguousarray(dy, dtype=xhat.dtype)
    dx = np.empty_like(xhat)
    sum_dy, sum_dy_xhat = np.empty(c), np.empty(c)
    g = np.ones(c, xhat.dtype) if saved.gamma is None else saved.gamma
    kernels.backward(dy, xhat, g, saved.inv_std, dx, sum_dy, sum_dy_xhat)
    dgamma = None if saved.gamma is None else sum_dy_xhat.astype(param_dtype)
    dbeta = sum_dy.astype(param_dtype) if saved.has_beta else None
    return dx, dgamma, dbeta

"""Numba kernels for batch norm's small ``(N, C)`` training step (:mod:`normgrad.nn.batch_norm_2d`).

One serial loop nest per pass: at a few thousand values a thread pool costs more than it
saves, and the point is to replace the dozen NumPy calls of each pass by one call. The
statistics and the gradient sums accumulate in float64, two passes around the mean (the
mean, then the squares of ``x - mean``), and ``x - mean`` is formed in float64, so a float32
x is centred as exactly as the NumPy path's two-part subtraction centres it.
Imported only when Numba is installed and a step runs.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True)
def forward(x, gamma, beta, eps, out, xhat, mean, var, inv_std, running_mean, running_var,
            weight, update):  # fmt: skip
    """y into ``out`` and xhat into ``xhat`` (both x's shape and dtype); the batch mean,
    biased variance and ``inv_std`` into the float64 ``(C,)`` arrays; the running
    statistics updated in place when ``update`` (unbiased variance). gamma and beta are
    ``(C,)`` (ones and zeros when the layer has none)."""
    n, c = x.shape
    for j in range(c):
        mean[j] = 0.0
        var[j] = 0.0
    for i in range(n):
        for j in range(c):
            mean[j] += x[i, j]
    for j in range(c):
        mean[j] /= n
    for i in range(n):
        for j in range(c):
            d = x[i, j] - mean[j]
            var[j] += d * d
    for j in range(c):
        m2 = var[j]
        var[j] = m2 / n
        inv_std[j] = 1.0 / math.sqrt(var[j] + eps)
        if update:
            running_mean[j] = (1.0 - weight) * running_mean[j] + weight * mean[j]
            running_var[j] = (1.0 - weight) * running_var[j] + weight * (m2 / (n - 1))
    for i in range(n):
        for j in range(c):
            h = (x[i, j] - mean[j]) * inv_std[j]
            xhat[i, j] = h
            out[i, j] = gamma[j] * xhat[i, j] + beta[j]


@njit(cache=True)
def backward(dy, xhat, gamma, inv_std, dx, sum_dy, sum_dy_xhat):
    """dx into ``dx``; ``sum(dy)`` (dbeta) and ``sum(dy * xhat)`` (dgamma) per channel into
    the float64 ``(C,)`` arrays: ``dx = gamma * r / N * (N * dy - sum_dy - xhat *
    sum_dy_xhat)``."""
    n, c = dy.shape
    for j in range(c):
        sum_dy[j] = 0.0
        sum_dy_xhat[j] = 0.0
    for i in range(n):
        for j in range(c):
            g = np.float64(dy[i, j])
            sum_dy[j] += g
            sum_dy_xhat[j] += g * xhat[i, j]
    for i in range(n):
        for j in range(c):
            dx[i, j] = (gamma[j] * inv_std[j] / n) * (
                n * np.float64(dy[i, j]) - sum_dy[j] - xhat[i, j] * sum_dy_xhat[j]
            )

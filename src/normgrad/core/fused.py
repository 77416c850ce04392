"""Batch norm through the fused Numba kernels, behind the same cache as the NumPy path.

Forward: one pass for the statistics, one to normalize. Backward: one pass for the two
sums, one for dx. The cache keeps x (a contiguous view, copied only if x was not
contiguous) instead of xhat, so nothing the size of x is stored beyond the output;
``cache.xhat`` is computed on demand for the staged backward and for inspection.
"""

from __future__ import annotations

import numpy as np

from normgrad.core.layout import NormLayout
from normgrad.core.normalize import Moments, NormCache, compute_dtype


def _kernels():
    from normgrad.kernels import numba_bn  # imported on first use: numba is optional

    return numba_bn


def _channel_axis(layout: NormLayout) -> int:
    return next(a for a, n in enumerate(layout.param_bcast) if a not in layout.reduce_axes)


def _cache(layout, x, x3, gamma, beta, mean, var, inv_std, eps, bessel, training) -> NormCache:
    """A fused cache: x (as the kernels saw it) instead of xhat; statistics in float64."""
    stats_shape = layout.stats_shape
    return NormCache(
        layout=layout,
        training=training,
        bessel=bessel,
        eps=eps,
        stored_xhat=None,
        mean=mean.reshape(stats_shape),
        var=var.reshape(stats_shape),
        inv_std=inv_std.reshape(stats_shape),
        gamma=None
        if gamma is None
        else gamma.astype(compute_dtype(x.dtype)).reshape(layout.param_bcast),
        has_beta=beta is not None,
        x_dtype=x.dtype,
        param_dtype=next((p.dtype for p in (gamma, beta) if p is not None), x.dtype),
        x_work=x3,
        backend="numba",
    )


def forward(x, gamma, beta, layout: NormLayout, *, eps, bessel, stats=None):
    """Same contract as :func:`normgrad.core.normalize.normalize_forward` (batch norm)."""
    k = _kernels()
    compute = compute_dtype(x.dtype)
    x3 = k.view3(x, _channel_axis(layout)).astype(compute, copy=False)
    c = x3.shape[1]
    if stats is None:
        count, mean, m2 = k.moments(x3)
        var = m2 / (count - 1 if bessel else count)
        mom = Moments(count, mean, m2, None)
    else:
        mean = np.asarray(stats[0], np.float64).reshape(c)
        var = np.asarray(stats[1], np.float64).reshape(c)
        mom = None
    inv_std = 1.0 / np.sqrt(var + eps)
    g = np.ones(c) if gamma is None else gamma.astype(np.float64)
    b = np.zeros(c) if beta is None else beta.astype(np.float64)
    y = k.affine(x3, mean, g * inv_std, b).astype(x.dtype, copy=False).reshape(x.shape)
    cache = _cache(layout, x, x3, gamma, beta, mean, var, inv_std, eps, bessel, stats is None)
    return y, cache, mom


def backward(dy, cache: NormCache):
    """Closed-form gradients ``(dx, dgamma, dbeta)`` in two fused passes."""
    k = _kernels()
    layout = cache.layout
    x3 = cache.x_work
    c = x3.shape[1]
    dy3 = k.view3(dy, _channel_axis(layout)).astype(x3.dtype, copy=False)
    mean = cache.mean.reshape(c)
    r = cache.inv_std.reshape(c)
    g = np.ones(c) if cache.gamma is None else cache.gamma.reshape(c).astype(np.float64)
    sum_dy, sum_dy_xmu = k.grad_sums(dy3, x3, mean)
    dgamma = None if cache.gamma is None else (sum_dy_xmu * r).astype(cache.param_dtype)
    dbeta = sum_dy.astype(cache.param_dtype) if cache.has_beta else None
    m = layout.count
    p = g * r
    if cache.training:
        factor = m / (m - 1) if cache.bessel else 1.0
        # dx = g r / M * (M dy - sum(dy) - factor * xhat * sum(dy * xhat)), xhat = (x - mean) r
        q = -g * r**3 * factor * sum_dy_xmu / m
        offset = -g * r * sum_dy / m
    else:  # eval: the statistics are constants, dx = g r dy
        q = np.zeros(c)
        offset = np.zeros(c)
    dx = k.grad_input(dy3, x3, mean, p, q, offset)
    return dx.astype(cache.x_dtype, copy=False).reshape(layout.x_shape), dgamma, dbeta


# --------------------------------------------------------------------------- per-sample norms


def _rows_view(layout: NormLayout):
    """(R, K, S) and the groups G of a layer/group/instance-norm layout (see numba_bn)."""
    work, reduce_axes, bcast = layout.work_shape, layout.reduce_axes, layout.param_bcast
    rows = int(np.prod([work[a] for a in range(len(work)) if a not in reduce_axes]))
    varying = _param_axes(layout)
    k = int(np.prod([work[a] for a in varying]))
    s = int(np.prod([work[a] for a in reduce_axes])) // max(k, 1)
    groups = int(np.prod([bcast[a] for a in range(len(work)) if a not in reduce_axes]))
    return (rows, k, s), groups


def _param_axes(layout: NormLayout) -> list[int]:
    """Reduced axes (of size > 1) the parameters vary along."""
    return [a for a in layout.reduce_axes if layout.param_bcast[a] > 1]


def rows_supported(layout: NormLayout) -> bool:
    """The (R, K, S) view needs the reduced axes trailing and, leaving out axes of size 1,
    those the parameters vary along first."""
    n = len(layout.work_shape)
    trailing = layout.reduce_axes == tuple(range(n - len(layout.reduce_axes), n))
    sized = [a for a in layout.reduce_axes if layout.work_shape[a] > 1]
    spanned = _param_axes(layout)
    return trailing and spanned == sized[: len(spanned)]


def rows_forward(x, gamma, beta, layout: NormLayout, *, eps, bessel):
    """Layer, group or instance norm in two fused passes; same contract as the NumPy path."""
    k = _kernels()
    compute = compute_dtype(x.dtype)
    shape3, groups = _rows_view(layout)
    x3 = np.ascontiguousarray(x).reshape(shape3).astype(compute, copy=False)
    mean, m2 = k.row_moments(x3)
    count = layout.count
    var = m2 / (count - 1 if bessel else count)
    inv_std = 1.0 / np.sqrt(var + eps)
    g2 = (np.ones(layout.param_shape) if gamma is None else gamma).reshape(groups, -1)
    b2 = (np.zeros(layout.param_shape) if beta is None else beta).reshape(groups, -1)
    y = k.row_affine(x3, mean, inv_std, g2, b2).astype(x.dtype, copy=False).reshape(x.shape)
    cache = _cache(layout, x, x3, gamma, beta, mean, var, inv_std, eps, bessel, True)
    return y, cache, None


def rows_backward(dy, cache: NormCache):
    k = _kernels()
    layout = cache.layout
    x3 = cache.x_work
    shape3, groups = _rows_view(layout)
    dy3 = np.ascontiguousarray(dy).reshape(shape3).astype(x3.dtype, copy=False)
    mean = cache.mean.reshape(-1)
    r = cache.inv_std.reshape(-1)
    gamma = np.ones(layout.param_shape) if cache.gamma is None else cache.gamma
    g2 = gamma.reshape(groups, -1).astype(np.float64)
    s1, s2, dgamma2, dbeta2 = k.row_grad_sums(dy3, x3, mean, r, g2)
    m = layout.count
    factor = m / (m - 1) if cache.bessel else 1.0
    # dx = g r dy - r sum(dxhat) / M - factor (x - mean) r^3 sum(dxhat (x - mean)) / M
    kq = -factor * r**3 * s2 / m
    kr = -r * s1 / m
    dx = k.row_grad_input(dy3, x3, mean, r, kq, kr, g2)

    def param(g):
        return g.reshape(layout.param_shape).astype(cache.param_dtype)

    dgamma = None if cache.gamma is None else param(dgamma2)
    dbeta = param(dbeta2) if cache.has_beta else None
    return dx.astype(cache.x_dtype, copy=False).reshape(layout.x_shape), dgamma, dbeta


def backward_any(dy, cache: NormCache):
    """The fused backward for a fused cache of any op."""
    return backward(dy, cache) if cache.op == "batch_norm" else rows_backward(dy, cache)

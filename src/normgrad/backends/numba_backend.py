"""The Numba backend: every op through fused kernels (``pip install 'normgrad[fast]'``).

Forward: one pass for the statistics, one to normalize. Backward: one pass for the two
sums, one for dx. The cache (:class:`FusedCache`) keeps x as the kernels saw it (a
contiguous view, copied only if x was not contiguous) instead of xhat, so nothing the size
of x is stored beyond the output; ``cache.xhat`` is computed when asked, for the staged
backward and for inspection.

Batch norm runs on a per-channel view ``(A, C, B)``; layer, group, instance and RMS norm on
a per-row view ``(R, K, S)`` (see :mod:`normgrad.backends.numba_kernels`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from normgrad.core.cache import Moments, NormCache, check_dy, compute_dtype, read_only
from normgrad.core.layout import NormLayout


def _kernels():
    from normgrad.backends import numba_kernels  # imported on first use: numba is optional

    return numba_kernels


@dataclass(frozen=True, eq=False, kw_only=True)
class FusedCache(NormCache):
    """The Numba backend's cache: the shared fields plus x as its kernels saw it.

    Attributes:
        x_view: x in the compute dtype, viewed as the kernels' 3-D shape (read-only).
    """

    x_view: np.ndarray

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "x_view", read_only(self.x_view))

    @property
    def xhat(self) -> np.ndarray:
        """Recomputed on each call (the cache stores x, not xhat)."""
        xw = self.x_view.reshape(self.layout.work_shape)
        compute = self.compute_dtype
        return read_only((xw - self.mean.astype(compute)) * self.inv_std.astype(compute))


def _cache(layout, x, x3, gamma, beta, mean, var, inv_std, eps, bessel, training) -> FusedCache:
    """A fused cache: x (as the kernels saw it) instead of xhat; statistics in float64."""
    stats_shape = layout.stats_shape
    return FusedCache(
        layout=layout,
        backend=NUMBA,
        training=training,
        bessel=bessel,
        eps=eps,
        mean=mean.reshape(stats_shape),
        var=var.reshape(stats_shape),
        inv_std=inv_std.reshape(stats_shape),
        gamma=None
        if gamma is None
        else gamma.astype(compute_dtype(x.dtype)).reshape(layout.param_bcast),
        has_beta=beta is not None,
        x_dtype=x.dtype,
        param_dtype=next((p.dtype for p in (gamma, beta) if p is not None), x.dtype),
        x_view=x3,
    )


def channel_forward(x, gamma, beta, layout: NormLayout, *, eps, bessel, stats=None):
    """Same contract as :func:`normgrad.backends.numpy_backend.normalize_forward` (batch norm)."""
    k = _kernels()
    compute = compute_dtype(x.dtype)
    x3 = k.view3(x, layout.channel_axis).astype(compute, copy=False)
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


def channel_backward(dy, cache: NormCache):
    """Closed-form gradients ``(dx, dgamma, dbeta)`` in two fused passes."""
    k = _kernels()
    layout = cache.layout
    x3 = cache.x_view
    c = x3.shape[1]
    dy3 = k.view3(dy, layout.channel_axis).astype(x3.dtype, copy=False)
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
    """Layer, group, instance or RMS norm in two fused passes; same contract as the NumPy path."""
    k = _kernels()
    compute = compute_dtype(x.dtype)
    shape3, groups = _rows_view(layout)
    x3 = np.ascontiguousarray(x).reshape(shape3).astype(compute, copy=False)
    mean, m2 = k.row_moments(x3, centered=layout.centered)
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
    x3 = cache.x_view
    shape3, groups = _rows_view(layout)
    dy3 = np.ascontiguousarray(dy).reshape(shape3).astype(x3.dtype, copy=False)
    mean = cache.mean.reshape(-1)
    r = cache.inv_std.reshape(-1)
    gamma = np.ones(layout.param_shape) if cache.gamma is None else cache.gamma
    g2 = gamma.reshape(groups, -1).astype(np.float64)
    s1, s2, dgamma2, dbeta2 = k.row_grad_sums(dy3, x3, mean, r, g2)
    m = layout.count
    factor = m / (m - 1) if cache.bessel else 1.0
    # dx = g r dy - r sum(dxhat) / M - factor (x - mean) r^3 sum(dxhat (x - mean)) / M;
    # without centring (RMS norm) the mean is 0 and its term, r sum(dxhat) / M, is absent.
    kq = -factor * r**3 * s2 / m
    kr = -r * s1 / m if layout.centered else np.zeros_like(r)
    dx = k.row_grad_input(dy3, x3, mean, r, kq, kr, g2)

    def param(g):
        return g.reshape(layout.param_shape).astype(cache.param_dtype)

    dgamma = None if cache.gamma is None else param(dgamma2)
    dbeta = param(dbeta2) if cache.has_beta else None
    return dx.astype(cache.x_dtype, copy=False).reshape(layout.x_shape), dgamma, dbeta


def _is_per_channel(layout: NormLayout) -> bool:
    """Batch norm's shape of layout: statistics and parameters share one (channel) axis."""
    return layout.channel_axis is not None


class NumbaBackend:
    """Fused Numba kernels for every op; batch norm in any layout, the per-row ops where the
    reduced axes trail (see :func:`rows_supported`). Not for synchronized statistics.

    Same contract as :class:`normgrad.backends.numpy_backend.NumpyBackend`.
    """

    name = "numba"

    def supports(self, layout: NormLayout) -> bool:
        return _is_per_channel(layout) or rows_supported(layout)

    def forward(self, x, gamma, beta, layout, *, eps, bessel, stats=None, comm=None):
        if comm is not None:
            raise ValueError("the Numba backend does not synchronize statistics: use numpy")
        if _is_per_channel(layout):
            return channel_forward(x, gamma, beta, layout, eps=eps, bessel=bessel, stats=stats)
        return rows_forward(x, gamma, beta, layout, eps=eps, bessel=bessel)

    def backward(self, dy, cache):
        dy = check_dy(dy, cache).reshape(cache.layout.x_shape)
        if _is_per_channel(cache.layout):
            return channel_backward(dy, cache)
        return rows_backward(dy, cache)

    def __repr__(self) -> str:
        return "NumbaBackend()"


NUMBA = NumbaBackend()

"""The Numba backend: every op through fused kernels (``pip install 'normgrad[fast]'``).

Forward: one sweep per reduction group (statistics, then normalize while the group is in
cache) for the per-sample norms and NCHW-like batch norm, and two streaming passes for an
(N, C) or channels-last batch norm; the backward the same for its two sums and dx (see
:mod:`normgrad.backends.numba_kernels`). The cache
(:class:`FusedCache`) keeps x as the kernels saw it (a contiguous view, copied only if x
was not contiguous) instead of xhat, so nothing the size of x is stored beyond the output;
``cache.xhat`` is computed when asked, for the staged backward and for inspection. A
changed x is caught by its fingerprint, which the kernels take as they read x.

Batch norm runs on a per-channel view ``(A, C, B)``; layer, group, instance and RMS norm on
a per-row view ``(R, K, S)`` (see :mod:`normgrad.backends.numba_kernels`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from normgrad.core.cache import (
    Moments,
    NormCache,
    check_dy,
    compute_dtype,
    fingerprint,
    read_only,
)
from normgrad.core.layout import NormLayout


def _kernels():
    from normgrad.backends import numba_kernels  # imported on first use: numba is optional

    return numba_kernels


@dataclass(frozen=True, eq=False, kw_only=True)
class FusedCache(NormCache):
    """The Numba backend's cache: the shared fields plus x as its kernels saw it.

    Attributes:
        x_view: x in the compute dtype, viewed as the kernels' 3-D shape (read-only).
        kernel_fingerprint: True when x_view is the caller's memory (x contiguous, of a
            computed dtype): the kernels fingerprint it as they read it. False when x_view
            is a copy: the caller's x is then fingerprinted by NumPy, so that a changed x
            raises on this backend exactly when it does on NumPy's.
        x_scale: the power of two x_view is x multiplied by: 1, or, for float64 input whose
            squared deviations would overflow, what brings its largest value near 1 (the
            kernels then see statistics scaled alike; see :func:`_overflow_scale`).
    """

    x_view: np.ndarray
    kernel_fingerprint: bool = True
    x_scale: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "x_view", read_only(self.x_view))

    def fingerprint_now(self) -> int | bytes:
        if self.kernel_fingerprint:  # source is x_view: the kernels' fingerprint
            return _kernels().fingerprint(self.x_view)
        return fingerprint(self.source)

    def check_kernel_fingerprint(self, fp: int) -> None:
        """Check x after a backward kernel that took ``fp``, its fingerprint of x_view."""
        self.check_source(fp if self.kernel_fingerprint else None)

    @property
    def xhat(self) -> np.ndarray:
        """Recomputed on each call (the cache stores x, not xhat), from x in float64."""
        self.check_source()
        xw = self.x_view.reshape(self.layout.work_shape)
        xhat = (xw - self.mean * self.x_scale) * (self.inv_std / self.x_scale)
        return read_only(xhat.astype(self.compute_dtype, copy=False))


def _cache(layout, x, x3, gamma, beta, mean, var, inv_std, eps, bessel, training, fp, scale=1.0):
    """A fused cache: x (as the kernels saw it) instead of xhat; statistics in float64."""
    stats_shape = layout.stats_shape
    shares = np.may_share_memory(x3, x)  # x3 is a view of x or a new array
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
        source=x3 if shares else x,
        source_fingerprint=fp if shares else fingerprint(x),
        kernel_fingerprint=shares,
        x_scale=scale,
    )


def _overflow_scale(m2: np.ndarray, x3: np.ndarray) -> float:
    """1.0, or the power of two to multiply x by when its squared deviations overflowed.

    Only float64 input can overflow them (a float32 difference squared in float64 cannot):
    a spread beyond about 1e154. The statistics are then taken of ``x * 2^-k``, with 2^k
    near x's largest magnitude; the scaling is exact, and y does not change with it."""
    if np.isfinite(m2).all():
        return 1.0
    top = float(np.max(np.abs(x3)))
    if not np.isfinite(top) or top == 0.0:  # non-finite input: its own (non-finite) result
        return 1.0
    return float(2.0 ** -np.frexp(top)[1])


def _unscaled(mean, m2, inv_std, scale):
    """The statistics of x from those of x * scale (M2 may overflow now: it is that big)."""
    with np.errstate(over="ignore"):
        return mean / scale, m2 / scale / scale, inv_std * scale


def _scaled_eps(eps: float, scale: float) -> float:
    # eps * scale^2 may underflow; the smallest normal keeps a constant group's y at beta
    return max(eps * scale * scale, float(np.finfo(np.float64).tiny))


def channel_forward(x, gamma, beta, layout: NormLayout, *, eps, bessel, stats=None):
    """Same contract as :func:`normgrad.backends.numpy_backend.normalize_forward` (batch norm)."""
    k = _kernels()
    compute = compute_dtype(x.dtype)
    x3 = k.view3(x, layout.channel_axis).astype(compute, copy=False)
    c = x3.shape[1]
    g = np.ones(c) if gamma is None else gamma.astype(np.float64)
    b = np.zeros(c) if beta is None else beta.astype(np.float64)
    count = x3.shape[0] * x3.shape[2]
    if stats is None:
        div = count - 1 if bessel else count
        with np.errstate(over="ignore", invalid="ignore"):  # see _overflow_scale
            y, mean, m2, inv_std, fp = k.bn_forward(x3, g, b, eps, div)
        scale = _overflow_scale(m2, x3)
        if scale != 1.0:
            x3 = x3 * scale
            y, mean, m2, inv_std, fp = k.bn_forward(x3, g, b, _scaled_eps(eps, scale), div)
            mean, m2, inv_std = _unscaled(mean, m2, inv_std, scale)
        var = m2 / div
        mom = Moments(count, mean, m2, None)
    else:
        mean = np.asarray(stats[0], np.float64).reshape(c)
        var = np.asarray(stats[1], np.float64).reshape(c)
        inv_std = 1.0 / np.sqrt(var + eps)
        y = np.empty(x3.shape, x3.dtype)
        fp = k.bn_affine_into(x3, mean, g * inv_std, b, y)
        mom = None
        scale = 1.0
    y = y.astype(x.dtype, copy=False).reshape(x.shape)
    training = stats is None
    cache = _cache(layout, x, x3, gamma, beta, mean, var, inv_std, eps, bessel, training, fp, scale)
    return y, cache, mom


def _view_statistics(cache: NormCache):
    """``(mean, inv_std, factor)`` of x_view, flat: the cache's statistics are those of x,
    x_view is ``x * x_scale``; factor is M / (M - 1) under Bessel's correction, else 1."""
    m = cache.layout.count
    factor = m / (m - 1) if cache.bessel else 1.0
    return cache.mean.reshape(-1) * cache.x_scale, cache.inv_std.reshape(-1) / cache.x_scale, factor


def _dx_of_x(dx, fp, cache: NormCache) -> np.ndarray:
    """The kernels' dx of x_view as dx of x, in x's dtype and shape, after checking that x
    was not written since the forward (``fp``: the backward kernel's fingerprint)."""
    cache.check_kernel_fingerprint(fp)
    if cache.x_scale != 1.0:  # dx of x = scale * dx of x_view = scale * x
        dx *= cache.x_scale
    return dx.astype(cache.x_dtype, copy=False).reshape(cache.layout.x_shape)


def channel_backward(dy, cache: NormCache):
    """Closed-form gradients ``(dx, dgamma, dbeta)``: one sweep per channel of an NCHW-like
    view, two passes over an (N, C) one."""
    k = _kernels()
    layout = cache.layout
    x3 = cache.x_view
    c = x3.shape[1]
    dy3 = k.view3(dy, layout.channel_axis).astype(x3.dtype, copy=False)
    mean, r, factor = _view_statistics(cache)
    g = np.ones(c) if cache.gamma is None else cache.gamma.reshape(c).astype(np.float64)
    # dx = g r / M * (M dy - sum(dy) - factor * xhat * sum(dy * xhat)), xhat = (x - mean) r;
    # in eval mode the statistics are constants and dx = g r dy.
    dx, sum_dy, sum_dy_xmu, fp = k.bn_backward(dy3, x3, mean, g, r, factor, cache.training)
    dgamma = None if cache.gamma is None else (sum_dy_xmu * r).astype(cache.param_dtype)
    dbeta = sum_dy.astype(cache.param_dtype) if cache.has_beta else None
    return _dx_of_x(dx, fp, cache), dgamma, dbeta


# --------------------------------------------------------------------------- per-sample norms


def _rows_view(layout: NormLayout):
    """(R, K, S) and the groups G of a layer/group/instance-norm layout (see numba_kernels)."""
    work, reduce_axes, bcast = layout.work_shape, layout.reduce_axes, layout.param_bcast
    rows = math.prod(work[a] for a in range(len(work)) if a not in reduce_axes)
    varying = _param_axes(layout)
    k = math.prod(work[a] for a in varying)
    s = math.prod(work[a] for a in reduce_axes) // max(k, 1)
    groups = math.prod(bcast[a] for a in range(len(work)) if a not in reduce_axes)
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
    """Layer, group, instance or RMS norm, one sweep per row; same contract as NumPy's."""
    k = _kernels()
    compute = compute_dtype(x.dtype)
    shape3, groups = _rows_view(layout)
    x3 = np.ascontiguousarray(x).reshape(shape3).astype(compute, copy=False)
    count = layout.count
    div = count - 1 if bessel else count
    g2 = np.ones((groups, shape3[1])) if gamma is None else gamma.astype(np.float64)
    b2 = np.zeros((groups, shape3[1])) if beta is None else beta.astype(np.float64)
    g2, b2 = g2.reshape(groups, -1), b2.reshape(groups, -1)
    y, mean, m2, inv_std, fp = k.rows_forward(x3, g2, b2, eps, div, layout.centered)
    scale = _overflow_scale(m2, x3)
    if scale != 1.0:
        x3 = x3 * scale
        scaled_eps = _scaled_eps(eps, scale)
        y, mean, m2, inv_std, fp = k.rows_forward(x3, g2, b2, scaled_eps, div, layout.centered)
        mean, m2, inv_std = _unscaled(mean, m2, inv_std, scale)
    var = m2 / div
    y = y.astype(x.dtype, copy=False).reshape(x.shape)
    cache = _cache(layout, x, x3, gamma, beta, mean, var, inv_std, eps, bessel, True, fp, scale)
    return y, cache, None


def rows_backward(dy, cache: NormCache):
    k = _kernels()
    layout = cache.layout
    x3 = cache.x_view
    shape3, groups = _rows_view(layout)
    dy3 = np.ascontiguousarray(dy).reshape(shape3).astype(x3.dtype, copy=False)
    mean, r, factor = _view_statistics(cache)
    gamma = np.ones(layout.param_shape) if cache.gamma is None else cache.gamma
    g2 = gamma.reshape(groups, -1).astype(np.float64)
    # dx = g r dy - r sum(dxhat) / M - factor (x - mean) r^3 sum(dxhat (x - mean)) / M;
    # without centring (RMS norm) the mean is 0 and its term, r sum(dxhat) / M, is absent.
    dx, dgamma2, dbeta2, fp = k.rows_backward(dy3, x3, mean, r, g2, factor, layout.centered)

    def param(g):
        return g.reshape(layout.param_shape).astype(cache.param_dtype)

    dgamma = None if cache.gamma is None else param(dgamma2)
    dbeta = param(dbeta2) if cache.has_beta else None
    return _dx_of_x(dx, fp, cache), dgamma, dbeta


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

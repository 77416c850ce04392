"""The NumPy backend: the shared statistics, normalize and closed-form backward every op uses.

Given a :class:`~normgrad.core.layout.NormLayout` (which axes are reduced, how the affine
parameters broadcast, whether to centre), this module computes (docs/design.md §2, §4, §6)::

    mu    = mean_R(x)                        (0 for RMS norm, which does not centre)
    var   = sum_R((x - mu)^2) / M            (or / (M - 1) with bessel=True)
    r     = 1 / sqrt(var + eps)              "inv_std"
    xhat  = (x - mu) * r
    y     = gamma * xhat + beta

and the closed-form backward::

    dxhat = dy * gamma
    dx    = (r / M) * (M * dxhat - sum_R(dxhat) - c * xhat * sum_R(dxhat * xhat))

with ``c = 1`` for the biased variance and ``c = M / (M - 1)`` for the Bessel-corrected one;
without centring the ``sum_R(dxhat)`` term (the mean's path) is absent.

Precision: element-wise work happens in the *compute dtype* (float32 for float16 input,
otherwise the input's own dtype); every reduction accumulates in float64, and the variance
is taken in two passes around the mean, never as ``E[x^2] - E[x]^2``, so it stays accurate
when the mean dwarfs the spread.

:class:`NumpyBackend` is the object :mod:`normgrad.backends` hands out; the staged backward
in :mod:`normgrad.core.staged` reads the same cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from normgrad.core.cache import (
    ACC,
    Moments,
    NormCache,
    check_dy,
    compute_dtype,
    fingerprint,
    param_grads,
    read_only,
)
from normgrad.core.layout import NormLayout


@dataclass(frozen=True, eq=False, kw_only=True)
class NumpyCache(NormCache):
    """The NumPy backend's cache: the shared fields plus ``xhat`` itself (read-only)."""

    saved_xhat: np.ndarray

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "saved_xhat", read_only(self.saved_xhat))

    @property
    def xhat(self) -> np.ndarray:
        return self.saved_xhat


def center(xw: np.ndarray, mean: np.ndarray, compute: np.dtype) -> np.ndarray:
    """``x - mean`` in the compute dtype, with the float64 mean subtracted in two parts.

    Rounding the mean to float32 first would shift every output by that rounding error:
    at mean/std = 1e4 that is 5e-4 of a standard deviation. Split as ``hi + lo`` (``hi`` the
    float32 mean, ``lo`` the remainder), ``x - hi`` is exact for x near the mean (Sterbenz's
    lemma) and subtracting ``lo`` rounds once, so ``x - mean`` is as accurate as its own last
    bit (docs/design.md §10). In float64 there is nothing to split.
    """
    if compute == np.float64:
        return np.subtract(xw, mean, dtype=compute)
    mean_hi = mean.astype(compute)
    mean_lo = (mean - mean_hi).astype(compute)
    xmu = np.subtract(xw, mean_hi, dtype=compute)
    xmu -= mean_lo
    return xmu


def moments(xw: np.ndarray, layout: NormLayout, scratch: np.ndarray | None = None) -> Moments:
    """Two-pass mean and M2 of ``xw`` (the view of x) over ``layout.reduce_axes``.

    ``scratch``, an array of xw's shape in the compute dtype, receives the squares (so the
    caller can reuse it, e.g. for the output) instead of a new temporary.
    """
    compute = compute_dtype(xw.dtype)
    axes = layout.reduce_axes
    if layout.centered:
        mean = np.mean(xw, axis=axes, keepdims=True, dtype=ACC)
        with np.errstate(over="ignore"):  # x - mu beyond float32's range: redone below
            xmu = center(xw, mean, compute)
    else:  # RMS norm: the second moment around zero
        mean = np.zeros(layout.stats_shape)
        xmu = xw.astype(compute)  # a copy: the forward scales it in place into xhat
    with np.errstate(over="ignore"):
        m2 = np.sum(np.square(xmu, out=scratch), axis=axes, keepdims=True, dtype=ACC)
    if compute != np.float64 and not np.all(np.isfinite(m2)) and np.all(np.isfinite(mean)):
        # A float32 square overflows beyond |x - mu| = 1.8e19 although x is finite; square
        # in float64 instead (and centre there too if x - mu itself left float32's range).
        # Only such inputs pay for it.
        xmu64 = np.subtract(xw, mean, dtype=ACC)
        m2 = np.sum(np.square(xmu64), axis=axes, keepdims=True)
        if not np.all(np.isfinite(xmu)):
            xmu = xmu64
    return Moments(layout.count, mean, m2, xmu)


def synchronized_moments(xw: np.ndarray, layout: NormLayout, comm) -> Moments:
    """Moments over the union of every rank's x; a rank may hold no values at all."""
    # dist sits at the edge (MPI); it is imported only when a communicator is given.
    from normgrad.dist import allgather_moments

    count = layout.count
    if count:
        local = moments(xw, layout)
        mean, m2 = local.mean, local.m2
    else:
        mean = np.zeros(layout.stats_shape)
        m2 = np.zeros(layout.stats_shape)
    total, g_mean, g_m2 = allgather_moments(comm, count, mean, m2)
    if total <= 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size "
            f"{layout.x_shape} on this rank and {total} value(s) per channel over all ranks"
        )
    shape = layout.stats_shape
    return Moments(total, g_mean.reshape(shape), g_m2.reshape(shape), None)


def _affine(xhat, gamma_b, beta_b, out):
    """``out = gamma * xhat + beta`` (either may be None), written into ``out``."""
    if gamma_b is not None:
        np.multiply(xhat, gamma_b, out=out)
    else:
        np.copyto(out, xhat)
    if beta_b is not None:
        out += beta_b
    return out


#: Rows of the view taken at a time by :func:`_rounded_once`: its float64 temporaries stay
#: about this many bytes (in cache), whatever the size of x.
_ROUNDED_CHUNK_BYTES = 1 << 20


def _centred_or_buffer(xw, mean, compute):
    """``x - mean`` in float64; below it, a buffer that :func:`_rounded_once` fills."""
    return center(xw, mean, compute) if compute == np.float64 else np.empty(xw.shape, compute)


def _rounded_once(xw, mean, inv_std, gamma, beta, layout: NormLayout, xhat, out):
    """``xhat = (x - mean) * inv_std`` into ``xhat`` and ``y = gamma * xhat + beta`` into
    ``out`` (both of the compute dtype, xw's shape), each computed in float64 and rounded
    once. Works along the view's first axis in slices, so the float64 temporaries stay small.
    """
    gamma64 = None if gamma is None else np.asarray(gamma, ACC).reshape(layout.param_bcast)
    beta64 = None if beta is None else np.asarray(beta, ACC).reshape(layout.param_bcast)
    if xhat.dtype != out.dtype:  # x - mu was centred in float64 (float32 overflowed)
        xhat = np.empty(out.shape, out.dtype)
    n = xw.shape[0]
    per_row = max(1, xw[:1].size * 8)
    step = max(1, _ROUNDED_CHUNK_BYTES // per_row)

    def rows(a, s):  # a's slice for the rows s of the view, or all of a if it broadcasts
        return a if a is None or a.shape[0] == 1 else a[s]

    for start in range(0, n, step):
        s = slice(start, min(n, start + step))
        xhat64 = np.subtract(xw[s], rows(mean, s), dtype=ACC)
        xhat64 *= rows(inv_std, s)
        xhat[s] = xhat64
        if gamma64 is not None:
            xhat64 *= rows(gamma64, s)
        if beta64 is not None:
            xhat64 += rows(beta64, s)
        out[s] = xhat64
    return xhat, out


def normalize_forward(
    x: np.ndarray,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    layout: NormLayout,
    *,
    eps: float,
    bessel: bool = False,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
    comm=None,
) -> tuple[np.ndarray, NormCache, Moments | None]:
    """Normalize ``x`` over ``layout.reduce_axes`` and apply the affine map.

    Args:
        x: input of shape ``layout.x_shape`` (validated by the caller).
        gamma, beta: shape ``layout.param_shape`` or None.
        stats: ``(mean, var)`` to use instead of batch statistics (eval mode), each
            broadcastable to ``layout.stats_shape``.
        comm: an MPI communicator: the statistics are those of the union of every rank's
            x (Chan's formula over one Allgather); the ranks may hold different N, even 0.

    Returns:
        ``(y, cache, moments)``: y with x's shape and dtype; the cache for the backward;
        the batch moments (None when ``stats`` was given), for running-statistics updates.
    """
    compute = compute_dtype(x.dtype)
    xw = x.reshape(layout.work_shape)
    # One buffer the size of x serves twice: for the squares of the variance pass, then
    # for the output. With xhat, that is all the forward allocates.
    out = np.empty(layout.work_shape, dtype=compute)
    if stats is None and comm is not None:
        mom = synchronized_moments(xw, layout, comm)
        var = mom.m2 / (mom.count - 1 if bessel else mom.count)
        mean = mom.mean
        xhat = _centred_or_buffer(xw, mean, compute)
    elif stats is None:
        mom = moments(xw, layout, scratch=out)
        mean = mom.mean
        var = mom.m2 / (mom.count - 1 if bessel else mom.count)
        xhat = mom.xmu  # centred in place below: it is our own temporary
    else:
        mom = None
        mean = np.asarray(stats[0], dtype=ACC).reshape(layout.stats_shape)
        var = np.asarray(stats[1], dtype=ACC).reshape(layout.stats_shape)
        xhat = _centred_or_buffer(xw, mean, compute)
    inv_std = 1.0 / np.sqrt(var + eps)
    gamma_b = None if gamma is None else gamma.astype(compute).reshape(layout.param_bcast)
    beta_b = None if beta is None else beta.astype(compute).reshape(layout.param_bcast)
    if compute == np.float64:
        xhat *= inv_std
        y = _affine(xhat, gamma_b, beta_b, out)
    else:
        # Below float64, xhat and y are each rounded once from float64 arithmetic on x and
        # the float64 mean (docs/design.md §10), as the fused kernels do: rounding x - mu
        # and then (x - mu) * r in float32 would cost up to 1.5 ulp of y.
        xhat, y = _rounded_once(xw, mean, inv_std, gamma, beta, layout, xhat, out)
    y = y.astype(x.dtype, copy=False).reshape(layout.x_shape)

    param_dtype = next((p.dtype for p in (gamma, beta) if p is not None), x.dtype)
    cache = NumpyCache(
        layout=layout,
        backend=NUMPY,
        training=stats is None,
        bessel=bessel,
        eps=eps,
        saved_xhat=xhat,
        mean=mean,
        var=var,
        inv_std=inv_std,
        gamma=gamma_b,
        has_beta=beta is not None,
        x_dtype=x.dtype,
        param_dtype=param_dtype,
        comm=comm if stats is None else None,
        global_count=mom.count if comm is not None and mom is not None else None,
        # This backend's backward reads only xhat, its own copy; it still checks x, so that
        # a changed x raises here as it must on the fused backend (which reads x itself).
        source=x,
        source_fingerprint=fingerprint(x),
    )
    return y, cache, mom


def normalize_backward(dy: np.ndarray, cache: NormCache):
    """Closed-form gradients ``(dx, dgamma, dbeta)`` (docs/design.md §4).

    ``dgamma``/``dbeta`` are None when gamma/beta were None. In eval mode the statistics are
    constants and the backward is that of the per-channel affine map ``dx = dxhat * r``.
    """
    compute = cache.compute_dtype
    dyw = check_dy(dy, cache).astype(compute, copy=False)
    cache.check_source()
    inv_std = cache.inv_std.astype(compute)
    layout = cache.layout
    if cache.training and layout.channel_axis is not None:
        return _batch_norm_backward(dyw, cache, inv_std)
    if cache.training:
        return _per_group_backward(dyw, cache, inv_std)
    dgamma, dbeta = param_grads(dyw, cache)
    dxhat = dyw * cache.gamma if cache.gamma is not None else dyw
    dx = dxhat * inv_std
    return dx.astype(cache.x_dtype, copy=False).reshape(cache.layout.x_shape), dgamma, dbeta


def _per_group_backward(dyw: np.ndarray, cache: NormCache, inv_std: np.ndarray):
    """The closed form for layer, group, instance and RMS norm with two reductions over x's
    size, as batch norm has (docs/design.md §4)::

        dx = r * (gamma * dy - sum_R(gamma * dy) / M - c * xhat * sum_R(gamma * dy * xhat) / M)

    The parameters are constant along the reduced axes they do not vary along ("inner":
    the spatial axes of group and instance norm), so the two sums over those axes, of ``dy``
    and ``t = dy * xhat``, are the only passes over the whole array; the gradients of gamma
    and beta and the per-group sums are then small reductions of these two partial sums.
    Layer and RMS norm have no inner axes: their parameters vary along every reduced axis,
    so the per-group sums weigh each element by gamma and dgamma/dbeta are sums over rows.
    """
    layout, compute = cache.layout, cache.compute_dtype
    reduce_axes, bcast = layout.reduce_axes, layout.param_bcast
    inner = tuple(a for a in reduce_axes if bcast[a] == 1)
    outer = tuple(a for a in reduce_axes if bcast[a] > 1)
    param_axes = tuple(a for a in layout.param_sum_axes if a not in inner)
    m = cache.count
    c = m / (m - 1) if cache.bessel else 1.0
    gamma = cache.gamma
    xhat = cache.xhat
    t = dyw * xhat  # the one temporary the size of x besides dx

    def partial(a):  # the sum over the inner axes, float64
        return np.sum(a, axis=inner, keepdims=True, dtype=ACC) if inner else a

    def group_sum(p):  # sum_R(gamma * a) from a's partial sum p
        w = p if gamma is None else p * gamma
        return np.sum(w, axis=outer, keepdims=True, dtype=ACC) if outer else w.astype(ACC)

    def param(p):
        s = np.sum(p, axis=param_axes, keepdims=True, dtype=ACC) if param_axes else p
        return s.reshape(layout.param_shape).astype(cache.param_dtype)

    need_dy_sum = layout.centered or cache.has_beta
    p_dy = partial(dyw) if need_dy_sum else None
    p_t = partial(t)
    dgamma = None if gamma is None else param(p_t)
    dbeta = param(p_dy) if cache.has_beta else None
    s_t = group_sum(p_t)
    # dx = (r gamma) dy + q xhat + offset, with q and offset per group
    q = (-c / m * inv_std * s_t).astype(compute)
    dx = np.multiply(xhat, q)  # the output's buffer
    if layout.centered:
        dx += (-inv_std / m * group_sum(p_dy)).astype(compute)
    scale_shape = (
        inv_std.shape if gamma is None else np.broadcast_shapes(gamma.shape, inv_std.shape)
    )
    if math.prod(scale_shape) * 2 <= dyw.size:  # r * gamma is small: one product
        dx += np.multiply(dyw, inv_std if gamma is None else gamma * inv_std, out=t)
    else:  # layer norm: gamma varies along the row, r across rows
        if gamma is None:
            np.multiply(dyw, inv_std, out=t)
        else:
            np.multiply(dyw, gamma, out=t)
            t *= inv_std
        dx += t
    return dx.astype(cache.x_dtype, copy=False).reshape(layout.x_shape), dgamma, dbeta


def _batch_norm_backward(dyw: np.ndarray, cache: NormCache, inv_std: np.ndarray):
    """The closed form in Thorey's shape, for layouts whose statistics and parameters share
    their axes (batch norm): ``sum_R(dxhat) = gamma * dbeta`` and ``sum_R(dxhat * xhat) =
    gamma * dgamma``, so two reductions give all three gradients::

        dx = gamma * r / M * (M * dy - dbeta - c * xhat * dgamma)
    """
    layout, compute = cache.layout, cache.compute_dtype
    xhat = cache.xhat
    sum_dy = np.sum(dyw, axis=layout.reduce_axes, keepdims=True, dtype=ACC)
    sum_dy_xhat = np.sum(dyw * xhat, axis=layout.reduce_axes, keepdims=True, dtype=ACC)

    def param(s):
        return s.reshape(layout.param_shape).astype(cache.param_dtype)

    # dgamma and dbeta are this rank's own contributions (their all-reduce is the
    # optimizer's, as for every other parameter); dx needs the sums over all ranks.
    dgamma = None if cache.gamma is None else param(sum_dy_xhat)
    dbeta = param(sum_dy) if cache.has_beta else None
    if cache.comm is not None:
        from normgrad.dist import allreduce_sum

        sum_dy, sum_dy_xhat = allreduce_sum(cache.comm, sum_dy, sum_dy_xhat)
    m = cache.count
    c = m / (m - 1) if cache.bessel else 1.0
    dx = dyw * compute.type(m)
    dx -= sum_dy.astype(compute)
    dx -= xhat * (c * sum_dy_xhat).astype(compute)
    scale = inv_std / m if cache.gamma is None else cache.gamma * inv_std / m
    dx *= scale.astype(compute)
    return dx.astype(cache.x_dtype, copy=False).reshape(layout.x_shape), dgamma, dbeta


class NumpyBackend:
    """The NumPy implementation of every op and layout; always available.

    ``forward(x, gamma, beta, layout, *, eps, bessel, stats=None, comm=None)`` returns
    ``(y, cache, moments)`` (moments None when ``stats`` were given); ``backward(dy, cache)``
    returns ``(dx, dgamma, dbeta)``. It is the only backend that synchronizes statistics
    over MPI (``comm``).
    """

    name = "numpy"

    def supports(self, layout: NormLayout) -> bool:
        return True

    def forward(self, x, gamma, beta, layout, *, eps, bessel, stats=None, comm=None):
        return normalize_forward(
            x, gamma, beta, layout, eps=eps, bessel=bessel, stats=stats, comm=comm
        )

    def backward(self, dy, cache):
        return normalize_backward(dy, cache)

    def __repr__(self) -> str:
        return "NumpyBackend()"


NUMPY = NumpyBackend()

"""The one normalization routine every op shares: statistics, normalize, closed-form backward.

Given a :class:`~normgrad.core.layout.NormLayout` (which axes are reduced, how the affine
parameters broadcast), this module computes (DESIGN.md §1)::

    mu    = mean_R(x)
    var   = sum_R((x - mu)^2) / M            (or / (M - 1) with bessel=True)
    r     = 1 / sqrt(var + eps)              "inv_std"
    xhat  = (x - mu) * r
    y     = gamma * xhat + beta

and the closed-form backward::

    dxhat = dy * gamma
    dx    = (r / M) * (M * dxhat - sum_R(dxhat) - c * xhat * sum_R(dxhat * xhat))

with ``c = 1`` for the biased variance and ``c = M / (M - 1)`` for the Bessel-corrected one.

Precision: element-wise work happens in the *compute dtype* (float32 for float16 input,
otherwise the input's own dtype); every reduction accumulates in float64, and the variance
is taken in two passes around the mean, never as ``E[x^2] - E[x]^2``, so it stays accurate
when the mean dwarfs the spread.

These three functions (``moments``, ``normalize_forward``, ``normalize_backward``) are the
seam a faster backend replaces; the staged backward in :mod:`normgrad.core.staged` reads
the same cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from normgrad.core.layout import NormLayout
from normgrad.core.validate import as_float_array

ACC = np.float64  # accumulator dtype for every reduction


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """float16 is computed in float32; float32 and float64 in their own type."""
    return np.dtype(np.float32) if dtype == np.float16 else np.dtype(dtype)


@dataclass(frozen=True, eq=False)
class NormCache:
    """What a forward pass keeps for its backward pass.

    Arrays are in the layout's *view* of x (``layout.work_shape``) and in the compute dtype,
    except the per-group statistics, which are float64 of shape ``layout.stats_shape``.

    Attributes:
        layout: which axes were reduced and how gamma/beta broadcast.
        training: True if batch statistics were used (their gradient flows back to x);
            False for eval-mode batch norm, where mean and var are constants.
        bessel: True if the variance was divided by M - 1 instead of M.
        eps: added to the variance under the square root.
        stored_xhat: the normalized input ``(x - mean) * inv_std``, as the NumPy path keeps
            it; None for the fused path, which keeps x instead (read ``xhat``, which computes
            it on first use).
        mean: the mean used (batch or running), float64, keepdims.
        var: the variance used (biased or Bessel batch variance, or running), float64.
        inv_std: ``1 / sqrt(var + eps)``, float64.
        gamma: gamma reshaped to ``layout.param_bcast`` in the compute dtype, or None.
        has_beta: whether a beta was given (else dbeta is None).
        x_dtype: dtype of x, and of dx.
        param_dtype: dtype of gamma (or beta), and of dgamma/dbeta.
        x_work: the fused path's contiguous copy or view of x (in the compute dtype).
        backend: ``"numpy"`` or ``"numba"``, the implementation that made the cache.
        comm: the communicator the statistics were synchronized over, or None.
        global_count: M over all ranks when synchronized (see ``count``).
    """

    layout: NormLayout
    training: bool
    bessel: bool
    eps: float
    stored_xhat: np.ndarray | None
    mean: np.ndarray
    var: np.ndarray
    inv_std: np.ndarray
    gamma: np.ndarray | None
    has_beta: bool
    x_dtype: np.dtype
    param_dtype: np.dtype
    x_work: np.ndarray | None = None
    backend: str = "numpy"
    comm: object = None
    global_count: int | None = None

    @property
    def count(self) -> int:
        """M: values per group, over every rank when the statistics were synchronized."""
        return self.layout.count if self.global_count is None else self.global_count

    @property
    def op(self) -> str:
        return self.layout.op

    @property
    def compute_dtype(self) -> np.dtype:
        return compute_dtype(self.x_dtype)

    @property
    def xhat(self) -> np.ndarray:
        """``(x - mean) * inv_std`` in the view's shape and the compute dtype."""
        if self.stored_xhat is None:
            xw = self.x_work.reshape(self.layout.work_shape)
            xhat = (xw - self.mean.astype(self.compute_dtype)) * self.inv_std.astype(
                self.compute_dtype
            )
            object.__setattr__(self, "stored_xhat", xhat)  # computed once, on demand
        return self.stored_xhat


class Moments(NamedTuple):
    """Per-group count, mean and sum of squared deviations (M2), plus the centred input.

    (count, mean, M2) is the triple Chan's parallel formula combines, which is how
    synchronized batch norm will merge statistics across processes.
    """

    count: int
    mean: np.ndarray  # float64, keepdims
    m2: np.ndarray  # float64, keepdims
    xmu: np.ndarray  # x - mean, compute dtype, the view's shape


def moments(xw: np.ndarray, layout: NormLayout, scratch: np.ndarray | None = None) -> Moments:
    """Two-pass mean and M2 of ``xw`` (the view of x) over ``layout.reduce_axes``.

    ``scratch``, an array of xw's shape in the compute dtype, receives the squares (so the
    caller can reuse it, e.g. for the output) instead of a new temporary.
    """
    compute = compute_dtype(xw.dtype)
    axes = layout.reduce_axes
    mean = np.mean(xw, axis=axes, keepdims=True, dtype=ACC)
    xmu = np.subtract(xw, mean.astype(compute), dtype=compute)
    m2 = np.sum(np.square(xmu, out=scratch), axis=axes, keepdims=True, dtype=ACC)
    return Moments(layout.count, mean, m2, xmu)


def synchronized_moments(xw: np.ndarray, layout: NormLayout, comm) -> Moments:
    """Moments over the union of every rank's x; a rank may hold no values at all."""
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
        xhat = np.subtract(xw, mean.astype(compute), dtype=compute)
    elif stats is None:
        mom = moments(xw, layout, scratch=out)
        mean = mom.mean
        var = mom.m2 / (mom.count - 1 if bessel else mom.count)
        xhat = mom.xmu  # centred in place below: it is our own temporary
    else:
        mom = None
        mean = np.asarray(stats[0], dtype=ACC).reshape(layout.stats_shape)
        var = np.asarray(stats[1], dtype=ACC).reshape(layout.stats_shape)
        xhat = np.subtract(xw, mean.astype(compute), dtype=compute)
    inv_std = 1.0 / np.sqrt(var + eps)
    xhat *= inv_std.astype(compute)

    gamma_b = None if gamma is None else gamma.astype(compute).reshape(layout.param_bcast)
    beta_b = None if beta is None else beta.astype(compute).reshape(layout.param_bcast)
    y = _affine(xhat, gamma_b, beta_b, out).astype(x.dtype, copy=False).reshape(layout.x_shape)

    param_dtype = next((p.dtype for p in (gamma, beta) if p is not None), x.dtype)
    cache = NormCache(
        layout=layout,
        training=stats is None,
        bessel=bessel,
        eps=eps,
        stored_xhat=xhat,
        mean=mean,
        var=var,
        inv_std=inv_std,
        gamma=gamma_b,
        has_beta=beta is not None,
        x_dtype=x.dtype,
        param_dtype=param_dtype,
        comm=comm if stats is None else None,
        global_count=mom.count if comm is not None and mom is not None else None,
    )
    return y, cache, mom


def check_cache(cache: object, op: str | None) -> NormCache:
    """The cache must be ours, and from the op whose backward is being called."""
    if not isinstance(cache, NormCache):
        raise TypeError(
            f"cache must be the NormCache returned by a normgrad forward function; "
            f"got {type(cache).__name__}"
        )
    if op is not None and cache.op != op:
        raise ValueError(
            f"cache comes from {cache.op}_forward, not {op}_forward: "
            f"pass it to {cache.op}_backward instead"
        )
    return cache


def check_dy(dy: object, cache: NormCache) -> np.ndarray:
    dy = as_float_array("dy", dy)
    if dy.shape != cache.layout.x_shape:
        raise ValueError(
            f"dy must have the shape of the forward output, {cache.layout.x_shape}; "
            f"got shape {dy.shape}"
        )
    return dy.reshape(cache.layout.work_shape)


def sum_r(a: np.ndarray, cache: NormCache) -> np.ndarray:
    """Sum over the reduced axes, accumulated in float64, returned in the compute dtype."""
    s = np.sum(a, axis=cache.layout.reduce_axes, keepdims=True, dtype=ACC)
    return s.astype(cache.compute_dtype)


def param_grads(dyw: np.ndarray, cache: NormCache):
    """``dgamma = sum(dy * xhat)`` and ``dbeta = sum(dy)`` over every non-parameter axis."""
    layout = cache.layout

    def reduce(a):
        s = np.sum(a, axis=layout.param_sum_axes, keepdims=True, dtype=ACC)
        return s.reshape(layout.param_shape).astype(cache.param_dtype)

    dgamma = None if cache.gamma is None else reduce(dyw * cache.xhat)
    dbeta = reduce(dyw) if cache.has_beta else None
    return dgamma, dbeta


def normalize_backward(dy: np.ndarray, cache: NormCache):
    """Closed-form gradients ``(dx, dgamma, dbeta)`` (DESIGN.md §1).

    ``dgamma``/``dbeta`` are None when gamma/beta were None. In eval mode the statistics are
    constants and the backward is that of the per-channel affine map ``dx = dxhat * r``.
    """
    compute = cache.compute_dtype
    dyw = check_dy(dy, cache).astype(compute, copy=False)
    inv_std = cache.inv_std.astype(compute)
    layout = cache.layout
    if cache.training and layout.op == "batch_norm":
        return _batch_norm_backward(dyw, cache, inv_std)
    dgamma, dbeta = param_grads(dyw, cache)
    dxhat = dyw * cache.gamma if cache.gamma is not None else dyw
    if cache.training:
        m = cache.count
        c = m / (m - 1) if cache.bessel else 1.0
        xhat = cache.xhat
        dx = dxhat * m
        dx -= sum_r(dxhat, cache)
        dx -= xhat * (c * sum_r(dxhat * xhat, cache))
        dx *= inv_std / m
    else:
        dx = dxhat * inv_std
    return dx.astype(cache.x_dtype, copy=False).reshape(cache.layout.x_shape), dgamma, dbeta


def _batch_norm_backward(dyw: np.ndarray, cache: NormCache, inv_std: np.ndarray):
    """Seed 001's form, for layouts whose statistics and parameters share their axes (batch
    norm): ``sum_R(dxhat) = gamma * dbeta`` and ``sum_R(dxhat * xhat) = gamma * dgamma``, so
    two reductions give all three gradients::

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

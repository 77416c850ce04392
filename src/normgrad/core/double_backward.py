"""Second derivatives of every op in closed form: the double backward (the closed form of
docs/design.md §4, differentiated once more).

The backward maps ``(x, gamma, dy)`` to ``(dx, dgamma, dbeta)``. Its own derivative, given
cotangents ``(ddx, ddgamma, ddbeta)`` of those three, is the gradient of

    L2 = <ddx, dx> + <ddgamma, dgamma> + <ddbeta, dbeta>

with respect to ``x``, ``gamma`` and ``dy``: three Hessian-vector products, what
``torch.autograd.grad((dx, dgamma, dbeta), (x, gamma, dy), (ddx, ddgamma, ddbeta))`` gives
with ``create_graph=True`` in the first backward. (beta does not appear in the backward, so
it has no second derivative.)

Per reduction group of M values, with ``g = dy * gamma``, ``k = 1/M`` (``1/(M-1)`` with
Bessel's correction), ``S`` the sum over the group and ``r`` the inverse std, the first
backward is ``dx = P(g)`` for the operator

    P(v) = r * (v - S(v)/M - k * xhat * S(xhat * v))        (no S(v)/M term for RMS norm)

which is also the Jacobian of ``xhat`` with respect to ``x``, and is symmetric. With ``a =
ddx`` and the sums ``Sa, Sg, Sag = S(a g), Sax = S(a xhat), Sgx = S(g xhat)``:

    grad_dy    = gamma * P(a) + ddgamma * xhat + ddbeta
    grad_gamma = sum_P(dy * P(a))
    grad_x     = P(u) - k r^2 xhat (Sag - Sa Sg / M - k Sax Sgx),
                 u = ddgamma * dy - k r (a Sgx + g Sax)

(the first term of grad_x is the path through xhat at fixed r, the second the path through
r, whose gradient is ``dr/dx = -k r^2 xhat``). In eval mode the statistics are constants,
``dx = r g``, and ``grad_x = r * ddgamma * dy`` alone. Everything is computed in float64.
"""

from __future__ import annotations

import numpy as np

from normgrad.core.cache import NormCache, check_cache, check_dy
from normgrad.core.table import get_op

__all__ = [
    "batch_norm_double_backward",
    "double_backward",
    "group_norm_double_backward",
    "instance_norm_double_backward",
    "layer_norm_double_backward",
    "rms_norm_double_backward",
]

SecondGrads = tuple[np.ndarray, np.ndarray | None, np.ndarray]


def _cotangent(name: str, value, shape: tuple[int, ...], bcast: tuple[int, ...] | None):
    """A cotangent as float64 (zeros where None), checked against the shape it pairs with."""
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}; got shape {arr.shape}")
    return arr if bcast is None else arr.reshape(bcast)


def double_backward(
    dy, cache: NormCache, ddx=None, ddgamma=None, ddbeta=None, *, op: str | None = None
) -> SecondGrads:
    """``(grad_x, grad_gamma, grad_dy)``: the gradients of ``<ddx, dx> + <ddgamma, dgamma> +
    <ddbeta, dbeta>`` with respect to x, gamma and dy, for the backward of ``cache``'s op.

    Args:
        dy: the upstream gradient the first backward was given, y's shape.
        cache: from any op's forward (training or eval mode, any layout, Bessel or not).
        ddx: cotangent of dx, x's shape, or None (zero).
        ddgamma, ddbeta: cotangents of dgamma and dbeta, the parameters' shape, or None.
        op: if given, the op the cache must come from.

    Returns:
        float64 arrays: grad_x (x's shape), grad_gamma (gamma's shape; None if the forward
        had no gamma), grad_dy (dy's shape).
    """
    cache = check_cache(cache, None if op is None else get_op(op).name)
    if cache.comm is not None:
        raise NotImplementedError("the double backward of synchronized batch norm is not built")
    layout = cache.layout
    dyw = check_dy(dy, cache).astype(np.float64)
    work, bcast, pshape = layout.work_shape, layout.param_bcast, layout.param_shape
    a = _cotangent("ddx", ddx, layout.x_shape, None)
    a = np.zeros(work) if a is None else a.reshape(work)
    if ddgamma is not None and cache.gamma is None:
        raise ValueError("ddgamma given, but the forward had no gamma (so no dgamma)")
    if ddbeta is not None and not cache.has_beta:
        raise ValueError("ddbeta given, but the forward had no beta (so no dbeta)")
    ddg = _cotangent("ddgamma", ddgamma, pshape, bcast)
    ddb = _cotangent("ddbeta", ddbeta, pshape, bcast)
    gamma = None if cache.gamma is None else np.asarray(cache.gamma, np.float64)
    xhat = np.asarray(cache.xhat, np.float64)
    r = np.asarray(cache.inv_std, np.float64)
    axes = layout.reduce_axes

    def s(v):
        return np.sum(v, axis=axes, keepdims=True)

    def param_sum(v):
        return np.sum(v, axis=layout.param_sum_axes, keepdims=True).reshape(pshape)

    g = dyw if gamma is None else dyw * gamma
    if cache.training:
        m = cache.count
        k = 1.0 / (m - 1) if cache.bessel else 1.0 / m

        def proj(v):  # P(v): the first backward's operator, and d xhat / dx
            out = v - k * xhat * s(xhat * v)
            if layout.centered:
                out = out - s(v) / m
            return r * out

        sum_gx, sum_ax = s(g * xhat), s(a * xhat)
        through_r = s(a * g) - k * sum_ax * sum_gx
        if layout.centered:
            through_r = through_r - s(a) * s(g) / m
        u = -k * r * (a * sum_gx + g * sum_ax)
        if ddg is not None:
            u = u + ddg * dyw
        grad_x = proj(u) - k * r**2 * xhat * through_r
        p_a = proj(a)
    else:  # eval mode: dx = r g, mean and var are constants
        grad_x = r * ddg * dyw if ddg is not None else np.zeros(work)
        p_a = r * a
    grad_dy = p_a if gamma is None else gamma * p_a
    if ddg is not None:
        grad_dy = grad_dy + ddg * xhat
    if ddb is not None:
        grad_dy = grad_dy + ddb
    grad_gamma = None if gamma is None else param_sum(dyw * p_a)
    shape = layout.x_shape
    return (
        np.array(np.broadcast_to(grad_x, work)).reshape(shape),
        grad_gamma,
        np.array(np.broadcast_to(grad_dy, work)).reshape(shape),
    )


def batch_norm_double_backward(dy, cache, ddx=None, ddgamma=None, ddbeta=None) -> SecondGrads:
    """:func:`double_backward` of batch norm (training or eval mode, any layout)."""
    return double_backward(dy, cache, ddx, ddgamma, ddbeta, op="batch_norm")


def layer_norm_double_backward(dy, cache, ddx=None, ddgamma=None, ddbeta=None) -> SecondGrads:
    """:func:`double_backward` of layer norm."""
    return double_backward(dy, cache, ddx, ddgamma, ddbeta, op="layer_norm")


def group_norm_double_backward(dy, cache, ddx=None, ddgamma=None, ddbeta=None) -> SecondGrads:
    """:func:`double_backward` of group norm."""
    return double_backward(dy, cache, ddx, ddgamma, ddbeta, op="group_norm")


def instance_norm_double_backward(dy, cache, ddx=None, ddgamma=None, ddbeta=None) -> SecondGrads:
    """:func:`double_backward` of instance norm."""
    return double_backward(dy, cache, ddx, ddgamma, ddbeta, op="instance_norm")


def rms_norm_double_backward(dy, cache, ddx=None, ddgamma=None) -> SecondGrads:
    """:func:`double_backward` of RMS norm (no beta, so no ddbeta)."""
    return double_backward(dy, cache, ddx, ddgamma, None, op="rms_norm")

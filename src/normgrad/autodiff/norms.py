"""The norms written once more, from autodiff primitives, for any op of the table.

The forward pass follows the staged graph's nodes (:mod:`normgrad.core.table`) and tags
each node with its step number and name, so :mod:`normgrad.learn.graph` can draw the graph
Kratzert's post draws. Which axes are reduced, and whether the op centres, come from the
same :class:`~normgrad.core.layout.NormLayout` the functional core uses; the gradients come
from the engine alone, which makes them a third, independent derivation to hold against
the closed form and the staged backward.
"""

from __future__ import annotations

import numpy as np

from normgrad.autodiff.engine import Tensor
from normgrad.core.layout import NormLayout
from normgrad.core.table import OpSpec, get_op


def _as_tensor(a, name: str) -> Tensor | None:
    if a is None:
        return None
    t = a if isinstance(a, Tensor) else Tensor(a)
    if not t.name:
        t.name = name
    return t


def normalize(
    x, gamma, beta, layout: NormLayout, *, eps: float = 1e-5, bessel: bool = False
) -> Tensor:
    """``gamma * (x - mean) / sqrt(var + eps) + beta`` over ``layout.reduce_axes``
    (``gamma * x / sqrt(mean(x^2) + eps)`` when the layout does not centre).

    ``x``, ``gamma`` and ``beta`` may be Tensors (to read their ``.grad`` afterwards) or
    arrays; gamma and beta may be None. Returns the output Tensor, shaped like x.
    """
    x = _as_tensor(x, "x")
    gamma, beta = _as_tensor(gamma, "gamma"), _as_tensor(beta, "beta")
    axes = layout.reduce_axes
    xw = x.reshape(layout.work_shape).tag("x (grouped)") if layout.op == "group_norm" else x

    if layout.centered:
        mu = xw.mean(axis=axes, keepdims=True).tag("mu", 1)
        xmu = (xw - mu).tag("xmu", 2)
    else:  # RMS norm: no mean; x itself is squared and scaled
        xmu = xw
    sq = (xmu**2).tag("sq", 3)
    if bessel:  # sum, then divide by M - 1: two nodes for step 4
        var = (sq.sum(axis=axes, keepdims=True).tag("sum_sq", 4) / (layout.count - 1)).tag("var", 4)
    else:
        var = sq.mean(axis=axes, keepdims=True).tag("var", 4)
    sqrtvar = (var + eps).tag("var + eps", 5).sqrt().tag("sqrtvar", 5)
    ivar = (1.0 / sqrtvar).tag("ivar", 6)
    out = (xmu * ivar).tag("xhat", 7)
    if gamma is not None:
        out = (_broadcastable(gamma, layout) * out).tag("gammax" if layout.centered else "out", 8)
    if beta is not None:
        out = (out + _broadcastable(beta, layout)).tag("out", 9)
    if out.shape != layout.x_shape:
        out = out.reshape(layout.x_shape).tag("out (ungrouped)")
    return out


def _broadcastable(p: Tensor, layout: NormLayout) -> Tensor:
    """gamma/beta as they broadcast against the view: (C,) becomes (1, C, 1, 1) for NCHW;
    already-trailing shapes ((D,) for (N, D), layer norm's) are left as they are."""
    if p.shape == layout.param_bcast[len(layout.param_bcast) - p.ndim :]:
        return p
    return p.reshape(layout.param_bcast).tag(f"{p.name} (bcast)")


def norm(
    op: OpSpec | str,
    x,
    gamma,
    beta=None,
    *,
    eps: float | None = None,
    bessel: bool = False,
    **option,
) -> Tensor:
    """Any op of the table, in training mode, from primitives; ``option`` is the op's axis
    keyword (``channel_axis``, ``normalized_ndim``, ``num_groups``)."""
    spec = get_op(op)
    data = np.asarray(x.data if isinstance(x, Tensor) else x)
    value = spec.check_input(data, option.get(spec.option, spec.option_default))
    layout = spec.make_layout(data.shape, value)
    if eps is None:
        eps = spec.default_eps if spec.default_eps is not None else float(np.finfo(data.dtype).eps)
    return normalize(x, gamma, beta, layout, eps=eps, bessel=bessel)


def batch_norm(x, gamma, beta, *, channel_axis: int = 1, eps: float = 1e-5, bessel: bool = False):
    """Training-mode batch norm from primitives (batch statistics)."""
    return norm("batch_norm", x, gamma, beta, channel_axis=channel_axis, eps=eps, bessel=bessel)


def layer_norm(x, gamma, beta, *, normalized_ndim: int = 1, eps: float = 1e-5, bessel=False):
    """Layer norm over the last ``normalized_ndim`` axes, from primitives."""
    return norm(
        "layer_norm", x, gamma, beta, normalized_ndim=normalized_ndim, eps=eps, bessel=bessel
    )


def group_norm(x, gamma, beta, num_groups: int, *, eps: float = 1e-5, bessel: bool = False):
    """Group norm of (N, C, *spatial) in ``num_groups`` groups, from primitives."""
    return norm("group_norm", x, gamma, beta, num_groups=num_groups, eps=eps, bessel=bessel)


def instance_norm(x, gamma, beta, *, eps: float = 1e-5, bessel: bool = False):
    """Instance norm of (N, C, *spatial), from primitives."""
    return norm("instance_norm", x, gamma, beta, eps=eps, bessel=bessel)


def rms_norm(x, gamma, *, normalized_ndim: int = 1, eps: float | None = None):
    """RMS norm over the last ``normalized_ndim`` axes, from primitives (no mean, no shift)."""
    return norm("rms_norm", x, gamma, None, normalized_ndim=normalized_ndim, eps=eps)

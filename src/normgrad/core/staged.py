"""The staged backward: the computational graph's nodes, walked back one step per node.

The forward pass, split into the nodes of the graph Kratzert draws (docs/design.md §3; the
nodes themselves are described once, in :mod:`normgrad.core.table`)::

    step 1  mu      = mean_R(x)
    step 2  xmu     = x - mu
    step 3  sq      = xmu ** 2
    step 4  var     = sum_R(sq) / M            (M - 1 with bessel=True)
    step 5  sqrtvar = sqrt(var + eps)
    step 6  ivar    = 1 / sqrtvar
    step 7  xhat    = xmu * ivar
    step 8  gammax  = gamma * xhat
    step 9  out     = gammax + beta

The backward visits them from the last to 0, each step multiplying the gradient from above
by its node's local derivative. Two gradients meet twice: at ``xmu`` (from step 7 directly
and from step 3 through the variance) and at ``x`` (through ``xmu`` and through ``mu``);
they are added there, exactly as in the post. The code keeps the post's names so it can be
read beside it; it is generic over the reduction axes, so every op has a staged backward.
RMS norm does not centre: it has no steps 1 and 2, x plays xmu's part, and the two paths
meet at x; it has no shift, so its last node is step 8.

``xmu`` is not stored in the cache (the cache holds ``xhat``); step 7's inputs are
recovered as ``xmu = xhat * sqrtvar``, which equals the forward's value to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from normgrad.core.cache import NormCache, check_cache, check_dy, param_grads, sum_r
from normgrad.core.table import get_op


@dataclass(frozen=True)
class Step:
    """One node of the staged backward.

    Attributes:
        number: the node's step number in the graph (9 down to 0).
        node: the forward computation at this node, e.g. ``"xhat = xmu * ivar"``.
        rule: the local derivative applied, in symbols.
        grads: the gradients this step produces, by name, in the view's shape.
        meets: where two incoming gradients are added at this step, e.g.
            ``"dxmu = dxmu1 + dxmu2"``; empty if none.
    """

    number: int
    node: str
    rule: str
    grads: dict[str, np.ndarray] = field(default_factory=dict)
    meets: str = ""


def staged_backward(dy, cache: NormCache, *, return_steps: bool = False, op: str | None = None):
    """Backward pass one graph node at a time; any op's cache.

    Args:
        dy: upstream gradient, same shape as the forward output.
        cache: the :class:`NormCache` from any normgrad forward function.
        return_steps: also return the list of :class:`Step` records, the last step first.
        op: if given, the op the cache must come from.

    Returns:
        ``(dx, dgamma, dbeta)``, or ``(dx, dgamma, dbeta, steps)`` with ``return_steps``.
        Equal to the closed form to rounding.
    """
    cache = check_cache(cache, op)
    if cache.comm is not None:
        raise ValueError(
            "the staged backward is single-process; a synchronized cache (comm=...) needs "
            "batch_norm_backward"
        )
    layout = cache.layout
    compute = cache.compute_dtype
    dout = check_dy(dy, cache).astype(compute, copy=False)
    cache.check_source()  # x written since the forward: an error, as in the closed form
    m = cache.count
    gamma, xhat = cache.gamma, cache.xhat
    var = cache.var.astype(compute)
    sqrtvar = np.sqrt(cache.var + cache.eps).astype(compute)
    ivar = cache.inv_std.astype(compute)
    xmu = xhat * sqrtvar  # x itself when the op does not centre
    node = {n.step: n for n in get_op(layout.op).nodes(cache.bessel)}
    steps: list[Step] = []

    def record(number: int, grads: dict, meets: str = "") -> None:
        steps.append(Step(number, node[number].expr, node[number].rule, grads, meets))

    dgamma, dbeta = param_grads(dout, cache)  # dbeta = sum(dout), dgamma = sum(dout * xhat)
    if 9 in node:
        # step 9: out = gammax + beta. An add passes the gradient through unchanged.
        dgammax = dout
        record(9, {"dgammax": dgammax} | ({"dbeta": dbeta} if dbeta is not None else {}))
    else:  # no shift: step 8's product is the output
        dgammax = dout

    # step 8: gammax = gamma * xhat. A product routes the gradient to each factor
    # times the other factor; gamma is broadcast, so its gradient is summed.
    dxhat = dgammax * gamma if gamma is not None else dgammax
    record(8, {"dxhat": dxhat} | ({"dgamma": dgamma} if dgamma is not None else {}))

    # step 7: xhat = xmu * ivar. ivar is per group, so its gradient is summed over R.
    divar = sum_r(dxhat * xmu, cache)
    dxmu1 = dxhat * ivar
    record(7, {"divar": divar, "dxmu1": dxmu1})

    if not cache.training:
        # Eval mode: mu and ivar are running statistics, constants. Only the path
        # through xmu reaches x, and x - mu passes it through unchanged.
        steps.append(Step(2, "xmu = x - running_mean", "d(a-c)/da = 1", {"dx": dxmu1}))
        steps.append(Step(0, "x", "", {"dx": dxmu1}))
        dx = dxmu1
    else:
        # step 6: ivar = 1 / sqrtvar.
        dsqrtvar = -1.0 / (sqrtvar**2) * divar
        record(6, {"dsqrtvar": dsqrtvar})
        # step 5: sqrtvar = sqrt(var + eps).
        dvar = 0.5 * 1.0 / np.sqrt(var + cache.eps) * dsqrtvar
        record(5, {"dvar": dvar})
        # step 4: var = sum_R(sq) / M. A sum spreads its gradient evenly over its inputs;
        # with Bessel's correction the divisor is M - 1, and that is the only change.
        divisor = m - 1 if cache.bessel else m
        dsq = np.ones_like(xmu) * dvar / divisor
        record(4, {"dsq": dsq})
        # step 3: sq = xmu ** 2.
        dxmu2 = 2 * xmu * dsq
        record(3, {"dxmu2": dxmu2})
        if not layout.centered:
            # No mean: x fed step 3 and step 7 directly, and its two gradients meet here.
            dx = dxmu1 + dxmu2
            steps.append(Step(0, "x", "", {"dx": dx}, meets="dx = dxmu1 + dxmu2"))
        else:
            # step 2: xmu = x - mu. The two gradients into xmu meet here and are added.
            dx1 = dxmu1 + dxmu2
            dmu = -sum_r(dxmu1 + dxmu2, cache)
            record(2, {"dx1": dx1, "dmu": dmu}, meets="dxmu = dxmu1 + dxmu2")
            # step 1: mu = mean_R(x). Like step 4: the gradient is spread evenly, 1/M each.
            dx2 = np.ones_like(xmu) * dmu / m
            record(1, {"dx2": dx2})
            # step 0: the two gradients into x meet and are added.
            dx = dx1 + dx2
            steps.append(Step(0, "x", "", {"dx": dx}, meets="dx = dx1 + dx2"))

    dx = dx.astype(cache.x_dtype, copy=False).reshape(layout.x_shape)
    if return_steps:
        return dx, dgamma, dbeta, steps
    return dx, dgamma, dbeta

"""The staged backward: seed 002's nine nodes, walked back one step per node.

The forward pass, split into the nodes of seed 002's computational graph::

    step 1  mu      = mean_R(x)
    step 2  xmu     = x - mu
    step 3  sq      = xmu ** 2
    step 4  var     = sum_R(sq) / M            (M - 1 with bessel=True)
    step 5  sqrtvar = sqrt(var + eps)
    step 6  ivar    = 1 / sqrtvar
    step 7  xhat    = xmu * ivar
    step 8  gammax  = gamma * xhat
    step 9  out     = gammax + beta

The backward visits them from 9 to 0, each step multiplying the gradient from above by its
node's local derivative. Two gradients meet twice: at ``xmu`` (from step 7 directly and
from step 3 through the variance) and at ``x`` (through ``xmu`` and through ``mu``); they
are added there, exactly as in the post. The code below keeps the post's names so it can be
read beside it; it is generic over the reduction axes, so every op has a staged backward.

``xmu`` is not stored in the cache (the cache holds ``xhat``); step 7's inputs are
recovered as ``xmu = xhat * sqrtvar``, which equals the forward's value to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from normgrad.core.normalize import NormCache, check_cache, check_dy, param_grads, sum_r


@dataclass(frozen=True)
class Step:
    """One node of the staged backward.

    Attributes:
        number: the node's step number in seed 002 (9 down to 0).
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


def staged_backward(dy, cache: NormCache, *, return_steps: bool = False, _op: str | None = None):
    """Backward pass one graph node at a time (seed 002); any op's cache.

    Args:
        dy: upstream gradient, same shape as the forward output.
        cache: the :class:`NormCache` from any normgrad forward function.
        return_steps: also return the list of :class:`Step` records, step 9 first.

    Returns:
        ``(dx, dgamma, dbeta)``, or ``(dx, dgamma, dbeta, steps)`` with ``return_steps``.
        Equal to the closed form to rounding.
    """
    cache = check_cache(cache, _op)
    if cache.comm is not None:
        raise ValueError(
            "the staged backward is single-process; a synchronized cache (comm=...) needs "
            "batch_norm_backward"
        )
    layout = cache.layout
    compute = cache.compute_dtype
    dout = check_dy(dy, cache).astype(compute, copy=False)
    m = cache.count
    gamma, xhat = cache.gamma, cache.xhat
    var = cache.var.astype(compute)
    sqrtvar = np.sqrt(cache.var + cache.eps).astype(compute)
    ivar = cache.inv_std.astype(compute)
    xmu = xhat * sqrtvar
    steps: list[Step] = []

    # step 9: out = gammax + beta. An add passes the gradient through unchanged.
    dgamma, dbeta = param_grads(dout, cache)  # dbeta = sum(dout), dgamma = sum(dout * xhat)
    dgammax = dout
    g9 = {"dgammax": dgammax} | ({"dbeta": dbeta} if dbeta is not None else {})
    steps.append(Step(9, "out = gammax + beta", "d(a+b)/da = 1, d(a+b)/db = 1", g9))

    # step 8: gammax = gamma * xhat. A product routes the gradient to each factor
    # times the other factor; gamma is broadcast, so its gradient is summed.
    dxhat = dgammax * gamma if gamma is not None else dgammax
    g8 = {"dxhat": dxhat} | ({"dgamma": dgamma} if dgamma is not None else {})
    steps.append(Step(8, "gammax = gamma * xhat", "d(ab)/da = b", g8))

    # step 7: xhat = xmu * ivar. ivar is per group, so its gradient is summed over R.
    divar = sum_r(dxhat * xmu, cache)
    dxmu1 = dxhat * ivar
    steps.append(Step(7, "xhat = xmu * ivar", "d(ab)/da = b", {"divar": divar, "dxmu1": dxmu1}))

    if not cache.training:
        # Eval mode: mu and ivar are running statistics, constants. Only the path
        # through xmu reaches x, and x - mu passes it through unchanged.
        steps.append(Step(2, "xmu = x - running_mean", "d(a-c)/da = 1", {"dx": dxmu1}))
        steps.append(Step(0, "x", "", {"dx": dxmu1}))
        dx = dxmu1
    else:
        # step 6: ivar = 1 / sqrtvar.
        dsqrtvar = -1.0 / (sqrtvar**2) * divar
        steps.append(Step(6, "ivar = 1 / sqrtvar", "d(1/a)/da = -1/a^2", {"dsqrtvar": dsqrtvar}))
        # step 5: sqrtvar = sqrt(var + eps).
        dvar = 0.5 * 1.0 / np.sqrt(var + cache.eps) * dsqrtvar
        steps.append(
            Step(5, "sqrtvar = sqrt(var + eps)", "d sqrt(a)/da = 1/(2 sqrt(a))", {"dvar": dvar})
        )
        # step 4: var = sum_R(sq) / M. A sum spreads its gradient evenly over its inputs;
        # with Bessel's correction the divisor is M - 1, and that is the only change.
        divisor = m - 1 if cache.bessel else m
        dsq = np.ones_like(xmu) * dvar / divisor
        steps.append(
            Step(4, f"var = sum(sq) / {'(M-1)' if cache.bessel else 'M'}", "1/M each", {"dsq": dsq})
        )
        # step 3: sq = xmu ** 2.
        dxmu2 = 2 * xmu * dsq
        steps.append(Step(3, "sq = xmu ** 2", "d(a^2)/da = 2a", {"dxmu2": dxmu2}))
        # step 2: xmu = x - mu. The two gradients into xmu meet here and are added.
        dx1 = dxmu1 + dxmu2
        dmu = -sum_r(dxmu1 + dxmu2, cache)
        steps.append(
            Step(
                2,
                "xmu = x - mu",
                "d(a-b)/da = 1, d(a-b)/db = -1",
                {"dx1": dx1, "dmu": dmu},
                meets="dxmu = dxmu1 + dxmu2",
            )
        )
        # step 1: mu = mean_R(x). Like step 4: the gradient is spread evenly, 1/M each.
        dx2 = np.ones_like(xmu) * dmu / m
        steps.append(Step(1, "mu = mean(x)", "1/M each", {"dx2": dx2}))
        # step 0: the two gradients into x meet and are added.
        dx = dx1 + dx2
        steps.append(Step(0, "x", "", {"dx": dx}, meets="dx = dx1 + dx2"))

    dx = dx.astype(cache.x_dtype, copy=False).reshape(layout.x_shape)
    if return_steps:
        return dx, dgamma, dbeta, steps
    return dx, dgamma, dbeta

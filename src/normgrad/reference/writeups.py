"""Three published derivations of the batch-norm backward, as code, for (N, D) inputs.

Each write-up's algorithm is written out as it stands, so that tests, ``normgrad verify``
and the grader can hold it against the library. Titles and authors are in
``docs/sources.md``; the math is in ``docs/design.md`` §3-§5.

- The staged backward, from Frederik Kratzert's "Understanding the backward pass through
  Batch Normalization Layer": the forward pass in nine numbered steps and the naive
  backward that walks them back from step 9 to step 0, verbatim apart from formatting
  (:func:`graph_walk_forward`, :func:`graph_walk_backward`).
- The closed form, from Clément Thorey's "What does the gradient flowing through batch
  normalization looks like?": ``dx = gamma * r / N * (N*dy - dbeta - xhat*dgamma)``
  (:func:`closed_form_backward`, on the staged forward's cache).
- The Bessel-corrected formula, the final result of "Backpropagation Derivation for Batch
  Normalization": its forward pass uses the biased variance, but its formula carries the
  factor ``n/(n-1)``, which is exact only for the Bessel-corrected variance
  (:func:`bessel_formula_backward`). Which variance it is evaluated with is a parameter;
  the tests show it is right for one and wrong for the other.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "bessel_formula_backward",
    "closed_form_backward",
    "graph_walk_backward",
    "graph_walk_forward",
]


def graph_walk_forward(x, gamma, beta, eps):
    """The staged forward pass (Kratzert), step 1 to step 9, biased variance.

    Returns ``(out, cache)`` with ``cache = (xhat, gamma, xmu, ivar, sqrtvar, var, eps)``.
    """
    N, _D = x.shape
    # step1: calculate mean
    mu = 1.0 / N * np.sum(x, axis=0)
    # step2: subtract mean vector of every trainings example
    xmu = x - mu
    # step3: following the lower branch - calculation denominator
    sq = xmu**2
    # step4: calculate variance
    var = 1.0 / N * np.sum(sq, axis=0)
    # step5: add eps for numerical stability, then sqrt
    sqrtvar = np.sqrt(var + eps)
    # step6: invert sqrtwar
    ivar = 1.0 / sqrtvar
    # step7: execute normalization
    xhat = xmu * ivar
    # step8: Nor the two transformation steps
    gammax = gamma * xhat
    # step9
    out = gammax + beta
    # store intermediate
    cache = (xhat, gamma, xmu, ivar, sqrtvar, var, eps)
    return out, cache


def graph_walk_backward(dout, cache):
    """The staged backward (Kratzert), step 9 down to step 0; returns ``(dx, dgamma, dbeta)``."""
    xhat, gamma, xmu, ivar, sqrtvar, var, eps = cache
    N, D = dout.shape
    # step9
    dbeta = np.sum(dout, axis=0)
    dgammax = dout  # not necessary, but more understandable
    # step8
    dgamma = np.sum(dgammax * xhat, axis=0)
    dxhat = dgammax * gamma
    # step7
    divar = np.sum(dxhat * xmu, axis=0)
    dxmu1 = dxhat * ivar
    # step6
    dsqrtvar = -1.0 / (sqrtvar**2) * divar
    # step5
    dvar = 0.5 * 1.0 / np.sqrt(var + eps) * dsqrtvar
    # step4
    dsq = 1.0 / N * np.ones((N, D)) * dvar
    # step3
    dxmu2 = 2 * xmu * dsq
    # step2
    dx1 = dxmu1 + dxmu2
    dmu = -1 * np.sum(dxmu1 + dxmu2, axis=0)
    # step1
    dx2 = 1.0 / N * np.ones((N, D)) * dmu
    # step0
    dx = dx1 + dx2
    return dx, dgamma, dbeta


def closed_form_backward(dout, cache):
    """The closed form (Thorey) on the staged forward's cache; returns ``(dx, dgamma, dbeta)``.

    ``dx = gamma * r / N * (N*dy - dbeta - xhat*dgamma)`` with ``r = 1 / sqrt(var + eps)``.
    """
    xhat, gamma, _xmu, ivar, _sqrtvar, _var, _eps = cache
    N = dout.shape[0]
    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(dout * xhat, axis=0)
    dx = gamma * ivar / N * (N * dout - dbeta - xhat * dgamma)
    return dx, dgamma, dbeta


def bessel_formula_backward(dout, x, gamma, eps, *, variance: str = "biased"):
    """The Bessel-corrected formula, the write-up's final result::

        dL/dx_i = gamma / (n sqrt(var + eps)) * (n dy_i - n/(n-1) xhat_i sum_j dy_j xhat_j
                                                 - sum_j dy_j)

    evaluated with ``var`` and ``xhat`` from the ``"biased"`` variance (what the write-up's
    forward pass computes) or the ``"bessel"`` one (under which the formula is exact).
    Returns ``(dx, dgamma, dbeta)``.
    """
    if variance not in ("biased", "bessel"):
        raise ValueError(f"variance must be 'biased' or 'bessel'; got {variance!r}")
    n = x.shape[0]
    mu = x.mean(axis=0)
    var = ((x - mu) ** 2).sum(axis=0) / (n if variance == "biased" else n - 1)
    xhat = (x - mu) / np.sqrt(var + eps)
    dbeta = dout.sum(axis=0)
    dgamma = (dout * xhat).sum(axis=0)
    dx = gamma / (n * np.sqrt(var + eps)) * (n * dout - n / (n - 1) * xhat * dgamma - dbeta)
    return dx, dgamma, dbeta

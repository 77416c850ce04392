"""The three source write-ups, as code, for (N, D) inputs.

These are the algorithms of the posts in ``shared/seeds/`` written out as they stand, so
that tests, ``normgrad verify`` and the grader can hold them against the library:

- seed 002: the vanilla forward in nine numbered steps and the naive backward that walks
  them back, verbatim apart from formatting (:func:`seed002_forward`,
  :func:`seed002_backward`);
- seed 001: the closed form ``dx = gamma * r / N * (N*dy - dbeta - xhat*dgamma)``
  (:func:`seed001_backward`, on seed 002's cache);
- seed 000: the final formula of a derivation whose forward pass uses the biased variance
  but whose result carries the factor ``n/(n-1)``, exact only for the Bessel-corrected
  variance (:func:`seed000_backward`). Which variance it is evaluated with is a parameter;
  the tests show it is right for one and wrong for the other.
"""

from __future__ import annotations

import numpy as np

__all__ = ["seed000_backward", "seed001_backward", "seed002_backward", "seed002_forward"]


def seed002_forward(x, gamma, beta, eps):
    """Seed 002's forward pass, step 1 to step 9 (biased variance)."""
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


def seed002_backward(dout, cache):
    """Seed 002's naive backward, step 9 down to step 0."""
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


def seed001_backward(dout, cache):
    """Seed 001's closed form, on seed 002's cache: ``gamma*r/N * (N*dy - dbeta - xhat*dgamma)``."""
    xhat, gamma, _xmu, ivar, _sqrtvar, _var, _eps = cache
    N = dout.shape[0]
    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(dout * xhat, axis=0)
    dx = gamma * ivar / N * (N * dout - dbeta - xhat * dgamma)
    return dx, dgamma, dbeta


def seed000_backward(dout, x, gamma, eps, *, variance: str = "biased"):
    """Seed 000's final formula::

        dL/dx_i = gamma / (n sqrt(var + eps)) * (n dy_i - n/(n-1) xhat_i sum_j dy_j xhat_j
                                                 - sum_j dy_j)

    evaluated with ``var`` and ``xhat`` from the ``"biased"`` variance (what the post's
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

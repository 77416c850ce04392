"""The known wrong ways to write batch/layer/group norm, computed for given inputs.

The grader holds a learner's wrong output against each of these and names the closest.
Every variant is computed from the same inputs as the right answer, generic over the
reduction axes (so the same mistakes are recognised in batch, layer, spatial and group
norm). Several candidates may share a name (there is more than one way to flip a sign).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from normgrad.autodiff import Tensor
from normgrad.backends.numpy_backend import normalize_forward
from normgrad.core.layout import NormLayout

Grads = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Mistake:
    name: str
    description: str


MISTAKES = {
    m.name: m
    for m in [
        Mistake(
            "bessel",
            "the Bessel-corrected gradient where the biased one is due: the n/(n-1) factor "
            "(seed 000's final formula) belongs to var = sum/(N-1), but the forward pass "
            "divides by N",
        ),
        Mistake(
            "no_mean_path",
            "the mean path is missing: the gradient through mu (step 1, dx2 = dmu / N) never "
            "reaches dx",
        ),
        Mistake(
            "no_variance_path",
            "the variance path is missing: the gradient through var (steps 6 to 3, dxmu2) "
            "never reaches dx",
        ),
        Mistake(
            "params_not_summed",
            "dgamma/dbeta not summed over the batch: gamma and beta are broadcast over N (and "
            "H, W), so their gradients must be summed over those axes",
        ),
        Mistake(
            "eps_outside_sqrt",
            "eps outside the square root: the forward pass divides by sqrt(var + eps), not "
            "sqrt(var) + eps",
        ),
        Mistake("sign_flipped", "a sign is flipped"),
        Mistake(
            "x_grads_not_added",
            "the two gradients into x were not added: dx = dx1 + dx2 (step 0), one of them "
            "is missing",
        ),
        Mistake(
            "bessel_forward",
            "the forward pass divides the variance by N - 1; batch norm's variance is the "
            "biased one, divided by N",
        ),
        Mistake("wrong_axis", "normalized over the wrong axis"),
        Mistake("affine_missing", "gamma and beta are not applied (y should be gamma*xhat + beta)"),
        Mistake(
            "momentum_reversed",
            "momentum weights the new batch (PyTorch's convention); the course's weights the "
            "old value: running = momentum * running + (1 - momentum) * batch",
        ),
        Mistake(
            "unbiased_running_var",
            "the running variance is the unbiased (N - 1) batch variance; the course keeps "
            "the biased one",
        ),
    ]
}


def _eps_outside(layout: NormLayout, x, gamma, beta, eps, dy=None):
    """y = gamma * (x - mu) / (sqrt(var) + eps) + beta, and its gradients (autodiff)."""
    xt = Tensor(x.reshape(layout.work_shape))
    gt = Tensor(gamma.reshape(layout.param_bcast))
    bt = Tensor(beta.reshape(layout.param_bcast))
    axes = layout.reduce_axes
    xmu = xt - xt.mean(axis=axes, keepdims=True)
    var = (xmu**2).mean(axis=axes, keepdims=True)
    y = gt * (xmu / (var.sqrt() + eps)) + bt
    if dy is None:
        return y.data.reshape(x.shape)
    y.backward(dy.reshape(layout.work_shape))
    return (
        xt.grad.reshape(x.shape),
        gt.grad.reshape(layout.param_shape),
        bt.grad.reshape(layout.param_shape),
    )


def backward_variants(layout: NormLayout, x, gamma, beta, dy, eps) -> dict[str, list[Grads]]:
    """Each known backward mistake's ``(dx, dgamma, dbeta)`` for these inputs (biased BN)."""
    _, cache, _ = normalize_forward(x, gamma, beta, layout, eps=eps)
    axes, m = layout.reduce_axes, layout.count
    r, xhat = cache.inv_std, cache.xhat
    dyw = dy.reshape(layout.work_shape)
    dxhat = dyw * cache.gamma

    def s(a):
        return np.sum(a, axis=axes, keepdims=True)

    def param(a):
        return np.sum(a, axis=layout.param_sum_axes, keepdims=True).reshape(layout.param_shape)

    mean_term, var_term = s(dxhat), xhat * s(dxhat * xhat)
    dgamma, dbeta = param(dyw * xhat), param(dyw)

    def dx_of(w):
        return w.reshape(x.shape)

    dx1 = r * (dxhat - var_term / m)  # the path through xmu only
    # The closed form with r' = 1 / (sqrt(var) + eps) and xhat' = xmu * r' throughout: a
    # right forward pass with the wrong r in the backward.
    eps_r = 1.0 / (np.sqrt(cache.var) + eps)
    eps_xhat = xhat / r * eps_r
    eps_closed = eps_r / m * (m * dxhat - mean_term - eps_xhat * s(dxhat * eps_xhat))
    return {
        "bessel": [
            (dx_of(r / m * (m * dxhat - mean_term - m / (m - 1) * var_term)), dgamma, dbeta)
        ],
        "no_mean_path": [(dx_of(dx1), dgamma, dbeta)],
        "no_variance_path": [(dx_of(r * (dxhat - mean_term / m)), dgamma, dbeta)],
        "params_not_summed": [
            (dx_of(r / m * (m * dxhat - mean_term - var_term)), dx_of(dyw * xhat), dx_of(dyw))
        ],
        "eps_outside_sqrt": [
            _eps_outside(layout, x, gamma, beta, eps, dy),
            (dx_of(eps_closed), param(dyw * eps_xhat), dbeta),
        ],
        "sign_flipped": [
            (dx_of(-r / m * (m * dxhat - mean_term - var_term)), dgamma, dbeta),
            (dx_of(r / m * (m * dxhat + mean_term - var_term)), dgamma, dbeta),
            (dx_of(r / m * (m * dxhat - mean_term + var_term)), dgamma, dbeta),
        ],
        "x_grads_not_added": [(dx_of(np.broadcast_to(-s(dx1) / m, dx1.shape)), dgamma, dbeta)],
    }


def forward_variants(layout: NormLayout, x, gamma, beta, eps) -> dict[str, list[np.ndarray]]:
    """Each known forward mistake's output for these inputs."""
    variants = {
        "bessel_forward": [normalize_forward(x, gamma, beta, layout, eps=eps, bessel=True)[0]],
        "eps_outside_sqrt": [_eps_outside(layout, x, gamma, beta, eps)],
        "affine_missing": [normalize_forward(x, None, None, layout, eps=eps)[0]],
    }
    if x.ndim == 2:  # batch norm over features instead of samples, or the reverse
        other = [a for a in range(2) if a not in layout.reduce_axes]
        xhat = (x - x.mean(axis=other[0], keepdims=True)) / np.sqrt(
            x.var(axis=other[0], keepdims=True) + eps
        )
        variants["wrong_axis"] = [xhat * gamma + beta]
    return variants

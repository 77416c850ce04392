"""The known wrong ways to write a normalization, computed for given inputs.

The grader holds a learner's wrong output against each of these and names the closest.
Every variant is computed from the same inputs as the right answer, generic over the
reduction axes (so the same mistakes are recognised in batch, layer, spatial and group
norm). An op that does not centre (RMS norm) has mistakes of its own: subtracting the
mean (computing layer norm), dividing by the Euclidean norm instead of the root mean
square, dropping the path through the mean of squares. Several candidates may share a
name (there is more than one way to flip a sign).

The math the right answers follow is in docs/design.md (§4 the closed form, §5 the two
variance conventions, §6 RMS norm).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from normgrad.autodiff import Tensor
from normgrad.backends.numpy_backend import normalize_backward, normalize_forward
from normgrad.core.layout import NormLayout

#: ``(dx, dgamma, dbeta)``; dbeta is None for an op without a shift.
Grads = tuple[np.ndarray, np.ndarray, np.ndarray | None]


@dataclass(frozen=True)
class Mistake:
    """A known mistake: its short name (for autograders) and what it is, in words."""

    name: str
    description: str


MISTAKES = {
    m.name: m
    for m in [
        Mistake(
            "bessel",
            "the Bessel-corrected formula's n/(n-1) factor where the biased gradient is due: "
            "the factor belongs to var = sum/(N-1), but the forward pass divides by N",
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
            "dgamma (and dbeta) not summed over the batch: the parameters are broadcast over "
            "N (and H, W), so their gradients must be summed over those axes",
        ),
        Mistake(
            "eps_outside_sqrt",
            "eps outside the square root: the forward pass divides by sqrt(var + eps) (for "
            "RMS norm sqrt(mean(x^2) + eps)), not sqrt(var) + eps",
        ),
        Mistake("sign_flipped", "a sign is flipped"),
        Mistake(
            "x_grads_not_added",
            "the two gradients into x were not added: dx = dx1 + dx2 (step 0), one of them "
            "is missing",
        ),
        Mistake(
            "gamma_missing_in_dx",
            "dx ignores gamma: the gradient that reaches xhat is dout * gamma (step 8), not dout",
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
        # RMS norm's own
        Mistake(
            "mean_subtracted",
            "the mean is subtracted: that is layer norm (without beta), not RMS norm, which "
            "scales x itself by 1 / sqrt(mean(x^2) + eps)",
        ),
        Mistake(
            "l2_norm_instead",
            "x is divided by its Euclidean norm sqrt(sum(x^2) + eps), not by its root mean "
            "square sqrt(mean(x^2) + eps): the sum must be divided by D",
        ),
        Mistake("scale_missing", "gamma is not applied (y should be gamma * xhat)"),
        Mistake(
            "no_mean_square_path",
            "the path through the mean of squares is missing: dx = dxhat * ivar treats ivar "
            "as a constant, but the term - ivar * xhat * sum(dxhat * xhat) / D is due "
            "(steps 6 to 3)",
        ),
        Mistake(
            "mean_path_added",
            "a mean path RMS norm does not have: the - sum(dxhat) term belongs to layer "
            "norm's gradient; RMS norm subtracts no mean, so no gradient flows through one",
        ),
        Mistake(
            "sum_not_averaged",
            "the 1/D of the mean of squares is missing from its path: the term is "
            "- ivar * xhat * sum(dxhat * xhat) / D, divided by D",
        ),
    ]
}


def _eps_outside(layout: NormLayout, x, gamma, beta, eps, dy=None):
    """``y = gamma * xc / (sqrt(var) + eps) + beta`` (``xc = x - mu``, or x itself where the
    layout does not centre); with ``dy``, its gradients ``(dx, dgamma, dbeta)`` (autodiff)."""
    xt = Tensor(x.reshape(layout.work_shape))
    gt = Tensor(gamma.reshape(layout.param_bcast))
    bt = None if beta is None else Tensor(beta.reshape(layout.param_bcast))
    axes = layout.reduce_axes
    xc = xt - xt.mean(axis=axes, keepdims=True) if layout.centered else xt
    var = (xc**2).mean(axis=axes, keepdims=True)
    y = gt * (xc / (var.sqrt() + eps))
    if bt is not None:
        y = y + bt
    if dy is None:
        return y.data.reshape(x.shape)
    y.backward(dy.reshape(layout.work_shape))
    return (
        xt.grad.reshape(x.shape),
        gt.grad.reshape(layout.param_shape),
        None if bt is None else bt.grad.reshape(layout.param_shape),
    )


def backward_variants(layout: NormLayout, x, gamma, beta, dy, eps) -> dict[str, list[Grads]]:
    """Each known backward mistake's ``(dx, dgamma, dbeta)`` for these inputs (biased
    variance; beta None for an op without a shift)."""
    _, cache, _ = normalize_forward(x, gamma, beta, layout, eps=eps)
    axes, m = layout.reduce_axes, layout.count
    r, xhat = cache.inv_std, cache.xhat
    dyw = dy.reshape(layout.work_shape)
    dxhat = dyw * cache.gamma

    def s(a):
        return np.sum(a, axis=axes, keepdims=True)

    def param(a):
        return np.sum(a, axis=layout.param_sum_axes, keepdims=True).reshape(layout.param_shape)

    def dx_of(w):
        return w.reshape(x.shape)

    # The closed form (docs/design.md §4, §6) is dx = r/M * (M dxhat - mean_term - var_term);
    # an op that does not centre has no mean term.
    mean_term = s(dxhat) if layout.centered else 0.0
    var_term = xhat * s(dxhat * xhat)
    dgamma, dbeta = param(dyw * xhat), None if beta is None else param(dyw)
    unsummed_dbeta = None if beta is None else dx_of(dyw)

    def closed(dxh=dxhat, mean=mean_term, var=var_term, factor=1.0):
        return dx_of(r / m * (m * dxh - mean - factor * var))

    # The closed form with r' = 1 / (sqrt(var) + eps) and xhat' = xc * r' throughout: a
    # right forward pass with the wrong r in the backward.
    eps_r = 1.0 / (np.sqrt(cache.var) + eps)
    eps_xhat = xhat / r * eps_r
    eps_closed = eps_r / m * (m * dxhat - mean_term - eps_xhat * s(dxhat * eps_xhat))
    dy_xhat = xhat * s(dyw * xhat)
    variants = {
        "params_not_summed": [(closed(), dx_of(dyw * xhat), unsummed_dbeta)],
        "eps_outside_sqrt": [
            _eps_outside(layout, x, gamma, beta, eps, dy),
            (dx_of(eps_closed), param(dyw * eps_xhat), dbeta),
        ],
        "sign_flipped": [
            (-closed(), dgamma, dbeta),
            (closed(var=-var_term), dgamma, dbeta),
        ],
        "gamma_missing_in_dx": [
            (closed(dxh=dyw, mean=s(dyw) if layout.centered else 0.0, var=dy_xhat), dgamma, dbeta)
        ],
    }
    if layout.centered:
        dx1 = r * (dxhat - var_term / m)  # the path through xmu only
        variants |= {
            "bessel": [(closed(factor=m / (m - 1)), dgamma, dbeta)],
            "no_mean_path": [(dx_of(dx1), dgamma, dbeta)],
            "no_variance_path": [(dx_of(r * (dxhat - mean_term / m)), dgamma, dbeta)],
            "x_grads_not_added": [(dx_of(np.broadcast_to(-s(dx1) / m, dx1.shape)), dgamma, dbeta)],
        }
        variants["sign_flipped"].append((closed(mean=-mean_term), dgamma, dbeta))
    else:
        # Layer norm's gradient, whole (the learner computed layer norm), and RMS norm's
        # with layer norm's mean term added.
        centred = replace(layout, centered=True)
        _, ln_cache, _ = normalize_forward(x, gamma, None, centred, eps=eps)
        ln_dx, ln_dgamma, _ = normalize_backward(dy, ln_cache)
        variants |= {
            "no_mean_square_path": [(dx_of(r * dxhat), dgamma, dbeta)],
            "mean_subtracted": [(ln_dx, ln_dgamma, dbeta)],
            "mean_path_added": [(closed(mean=s(dxhat)), dgamma, dbeta)],
            "sum_not_averaged": [(closed(var=m * var_term), dgamma, dbeta)],
        }
    return variants


def _normalize_over(x, gamma, beta, layout: NormLayout, axes: tuple[int, ...], eps):
    """The op's forward over ``axes`` of x instead of its own (``wrong_axis``)."""
    xc = x - x.mean(axis=axes, keepdims=True) if layout.centered else x
    y = xc / np.sqrt((xc**2).mean(axis=axes, keepdims=True) + eps) * gamma
    return y if beta is None else y + beta


def forward_variants(layout: NormLayout, x, gamma, beta, eps) -> dict[str, list[np.ndarray]]:
    """Each known forward mistake's output for these inputs (beta None for an op without a
    shift)."""
    variants = {"eps_outside_sqrt": [_eps_outside(layout, x, gamma, beta, eps)]}
    if layout.centered:
        variants |= {
            "bessel_forward": [normalize_forward(x, gamma, beta, layout, eps=eps, bessel=True)[0]],
            "affine_missing": [normalize_forward(x, None, None, layout, eps=eps)[0]],
        }
    else:
        xw = x.reshape(layout.work_shape)
        norm = np.sqrt(np.sum(xw**2, axis=layout.reduce_axes, keepdims=True) + eps)
        l2 = (xw / norm * gamma.reshape(layout.param_bcast)).reshape(x.shape)
        variants |= {
            "mean_subtracted": [
                normalize_forward(x, gamma, None, replace(layout, centered=True), eps=eps)[0]
            ],
            "l2_norm_instead": [l2],
            "scale_missing": [normalize_forward(x, None, None, layout, eps=eps)[0]],
        }
    if x.ndim == 2:  # over samples instead of features, or the reverse
        other = tuple(a for a in range(2) if a not in layout.reduce_axes)
        variants["wrong_axis"] = [_normalize_over(x, gamma, beta, layout, other, eps)]
    return variants

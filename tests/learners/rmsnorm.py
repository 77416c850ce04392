"""A learner's RMS norm in the course's style, right and wrong.

``rmsnorm_forward`` and ``rmsnorm_backward`` are right: the grader passes them. The
functions below them are the usual mistakes, one each; the tests grade each pair in
``MISTAKES`` under the names the grader knows, and expect the grader to name the mistake.
The grader ignores every other name, so ``normgrad check`` on this file grades only the
right pair.

RMS norm of x of shape (N, D), over the last axis:

    ms = mean(x^2)              one value per sample
    ivar = 1 / sqrt(ms + eps)   eps = rn_param.get("eps", 1e-5)
    xhat = x * ivar
    out = gamma * xhat          gamma of shape (D,); there is no beta

    dx = ivar / D * (D * dxhat - xhat * sum(dxhat * xhat)),  dxhat = dout * gamma
"""

import numpy as np


def rmsnorm_forward(x, gamma, rn_param):
    eps = rn_param.get("eps", 1e-5)
    ms = (x**2).mean(axis=1, keepdims=True)
    ivar = 1.0 / np.sqrt(ms + eps)
    xhat = x * ivar
    out = gamma * xhat
    cache = (x, xhat, ms, ivar, gamma, eps)
    return out, cache


def rmsnorm_backward(dout, cache):
    x, xhat, ms, ivar, gamma, eps = cache
    D = x.shape[1]
    dgamma = (dout * xhat).sum(axis=0)
    dxhat = dout * gamma
    dx = ivar / D * (D * dxhat - xhat * (dxhat * xhat).sum(axis=1, keepdims=True))
    return dx, dgamma


# --------------------------------------------------------------------------- wrong forwards


def forward_mean_subtracted(x, gamma, rn_param):
    """Layer norm without beta: the mean is subtracted."""
    eps = rn_param.get("eps", 1e-5)
    xmu = x - x.mean(axis=1, keepdims=True)
    var = (xmu**2).mean(axis=1, keepdims=True)
    ivar = 1.0 / np.sqrt(var + eps)
    xhat = xmu * ivar
    return gamma * xhat, (xmu, xhat, var, ivar, gamma, eps)


def backward_mean_subtracted(dout, cache):
    """Layer norm's backward, right for layer norm."""
    xmu, xhat, var, ivar, gamma, eps = cache
    D = xmu.shape[1]
    dxhat = dout * gamma
    dx = (
        ivar
        / D
        * (
            D * dxhat
            - dxhat.sum(axis=1, keepdims=True)
            - xhat * (dxhat * xhat).sum(axis=1, keepdims=True)
        )
    )
    return dx, (dout * xhat).sum(axis=0)


def forward_eps_outside_sqrt(x, gamma, rn_param):
    eps = rn_param.get("eps", 1e-5)
    rms = np.sqrt((x**2).mean(axis=1, keepdims=True))
    return gamma * x / (rms + eps), (x, gamma, eps)


def forward_l2_norm(x, gamma, rn_param):
    """Divides by the Euclidean norm: sum, not mean."""
    eps = rn_param.get("eps", 1e-5)
    return gamma * x / np.sqrt((x**2).sum(axis=1, keepdims=True) + eps), None


def forward_scale_missing(x, gamma, rn_param):
    eps = rn_param.get("eps", 1e-5)
    ivar = 1.0 / np.sqrt((x**2).mean(axis=1, keepdims=True) + eps)
    return x * ivar, None


# --------------------------------------------------------------------------- wrong backwards
# Each takes the right forward's cache.


def backward_no_mean_square_path(dout, cache):
    """ivar treated as a constant: the - xhat * sum(dxhat * xhat) / D term is missing."""
    x, xhat, ms, ivar, gamma, eps = cache
    return dout * gamma * ivar, (dout * xhat).sum(axis=0)


def backward_mean_path_added(dout, cache):
    """Layer norm's - sum(dxhat) term, which RMS norm does not have."""
    x, xhat, ms, ivar, gamma, eps = cache
    D = x.shape[1]
    dxhat = dout * gamma
    mean_term = dxhat.sum(axis=1, keepdims=True)
    var_term = xhat * (dxhat * xhat).sum(axis=1, keepdims=True)
    return ivar / D * (D * dxhat - mean_term - var_term), (dout * xhat).sum(axis=0)


def backward_dgamma_not_summed(dout, cache):
    dx, _ = rmsnorm_backward(dout, cache)
    x, xhat, ms, ivar, gamma, eps = cache
    return dx, dout * xhat


def backward_eps_outside_sqrt(dout, cache):
    """The right formula with ivar = 1 / (sqrt(ms) + eps)."""
    x, _xhat, ms, _ivar, gamma, eps = cache
    D = x.shape[1]
    ivar = 1.0 / (np.sqrt(ms) + eps)
    xhat = x * ivar
    dxhat = dout * gamma
    dx = ivar / D * (D * dxhat - xhat * (dxhat * xhat).sum(axis=1, keepdims=True))
    return dx, (dout * xhat).sum(axis=0)


def backward_sign_flipped(dout, cache):
    x, xhat, ms, ivar, gamma, eps = cache
    D = x.shape[1]
    dxhat = dout * gamma
    dx = ivar / D * (D * dxhat + xhat * (dxhat * xhat).sum(axis=1, keepdims=True))
    return dx, (dout * xhat).sum(axis=0)


def backward_sum_not_averaged(dout, cache):
    """The mean of squares' 1/D forgotten on its path."""
    x, xhat, ms, ivar, gamma, eps = cache
    dxhat = dout * gamma
    dx = ivar * (dxhat - xhat * (dxhat * xhat).sum(axis=1, keepdims=True))
    return dx, (dout * xhat).sum(axis=0)


def backward_gamma_missing(dout, cache):
    x, xhat, ms, ivar, gamma, eps = cache
    D = x.shape[1]
    dx = ivar / D * (D * dout - xhat * (dout * xhat).sum(axis=1, keepdims=True))
    return dx, (dout * xhat).sum(axis=0)


#: (the mistake's name in normgrad.learn.mistakes, the forward and the backward to grade as
#: rmsnorm_forward and rmsnorm_backward). A backward of None: only the forward is graded;
#: the right forward: only the backward is.
GRADED_MISTAKES = [
    ("mean_subtracted", "forward_mean_subtracted", "backward_mean_subtracted"),
    ("eps_outside_sqrt", "forward_eps_outside_sqrt", None),
    ("l2_norm_instead", "forward_l2_norm", None),
    ("scale_missing", "forward_scale_missing", None),
    ("eps_outside_sqrt", "rmsnorm_forward", "backward_eps_outside_sqrt"),
    ("no_mean_square_path", "rmsnorm_forward", "backward_no_mean_square_path"),
    ("mean_path_added", "rmsnorm_forward", "backward_mean_path_added"),
    ("params_not_summed", "rmsnorm_forward", "backward_dgamma_not_summed"),
    ("sign_flipped", "rmsnorm_forward", "backward_sign_flipped"),
    ("sum_not_averaged", "rmsnorm_forward", "backward_sum_not_averaged"),
    ("gamma_missing_in_dx", "rmsnorm_forward", "backward_gamma_missing"),
]

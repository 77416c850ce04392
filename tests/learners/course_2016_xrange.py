"""A correct batch norm in the style of the oldest course years: ``xrange`` from
``past.builtins`` (the grader stands in for the ``future`` package where it is not
installed), a loop over features, and bn_param's keys read with ``[]`` and ``.get``."""

import numpy as np
from past.builtins import xrange

EXPECTED = {
    "batchnorm_forward": ("pass", None),
    "batchnorm_backward": ("pass", None),
}


def batchnorm_forward(x, gamma, beta, bn_param):
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    N, D = x.shape
    running_mean = bn_param.get("running_mean", np.zeros(D, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.zeros(D, dtype=x.dtype))
    out, cache = None, None
    if mode == "train":
        mu = np.zeros(D)
        var = np.zeros(D)
        for j in xrange(D):
            mu[j] = np.sum(x[:, j]) / N
            var[j] = np.sum((x[:, j] - mu[j]) ** 2) / N
        xhat = (x - mu) / np.sqrt(var + eps)
        out = gamma * xhat + beta
        cache = (x, mu, var, eps, gamma, beta, xhat)
        running_mean = momentum * running_mean + (1 - momentum) * mu
        running_var = momentum * running_var + (1 - momentum) * var
    elif mode == "test":
        out = gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta
    else:
        raise ValueError('Invalid forward batchnorm mode "%s"' % mode)  # noqa: UP031
    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var
    return out, cache


def batchnorm_backward(dout, cache):
    x, mu, var, eps, gamma, beta, xhat = cache
    N = x.shape[0]
    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(dout * xhat, axis=0)
    dxhat = dout * gamma
    dvar = np.sum(dxhat * (x - mu), axis=0) * -0.5 * (var + eps) ** -1.5
    dmu = np.sum(-dxhat / np.sqrt(var + eps), axis=0) + dvar * np.sum(-2 * (x - mu), axis=0) / N
    dx = dxhat / np.sqrt(var + eps) + dvar * 2 * (x - mu) / N + dmu / N
    return dx, dgamma, dbeta

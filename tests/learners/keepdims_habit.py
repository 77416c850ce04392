"""Right values everywhere, but every sum keeps its dimensions: dgamma and dbeta come
back as (1, D), and so do the running statistics (which the grader compares by value,
whatever their shape, as the course notebook does)."""

import numpy as np

EXPECTED = {
    "batchnorm_forward": ("pass", None),
    "batchnorm_backward": ("wrong shape", "keepdims=True"),
    "layernorm_forward": ("pass", None),
    "layernorm_backward": ("wrong shape", "keepdims=True"),
}


def batchnorm_forward(x, gamma, beta, bn_param):
    eps, momentum = bn_param.get("eps", 1e-5), bn_param.get("momentum", 0.9)
    if bn_param["mode"] == "train":
        mu = x.mean(axis=0, keepdims=True)
        var = x.var(axis=0, keepdims=True)
        xhat = (x - mu) / np.sqrt(var + eps)
        bn_param["running_mean"] = momentum * bn_param["running_mean"] + (1 - momentum) * mu
        bn_param["running_var"] = momentum * bn_param["running_var"] + (1 - momentum) * var
        return gamma * xhat + beta, (xhat, gamma, np.sqrt(var + eps))
    xhat = (x - bn_param["running_mean"]) / np.sqrt(bn_param["running_var"] + eps)
    return gamma * xhat + beta, None


def batchnorm_backward(dout, cache):
    xhat, gamma, std = cache
    N = dout.shape[0]
    dxhat = dout * gamma
    dx = (
        N * dxhat - dxhat.sum(axis=0, keepdims=True) - xhat * (dxhat * xhat).sum(0, keepdims=True)
    ) / (N * std)
    return dx, (dout * xhat).sum(axis=0, keepdims=True), dout.sum(axis=0, keepdims=True)


def layernorm_forward(x, gamma, beta, ln_param):
    eps = ln_param.get("eps", 1e-5)
    std = np.sqrt(x.var(axis=1, keepdims=True) + eps)
    xhat = (x - x.mean(axis=1, keepdims=True)) / std
    return gamma * xhat + beta, (xhat, gamma, std)


def layernorm_backward(dout, cache):
    xhat, gamma, std = cache
    D = dout.shape[1]
    dxhat = dout * gamma
    dx = (
        D * dxhat - dxhat.sum(axis=1, keepdims=True) - xhat * (dxhat * xhat).sum(1, keepdims=True)
    ) / (D * std)
    return dx, (dout * xhat).sum(axis=0, keepdims=True), dout.sum(axis=0, keepdims=True)

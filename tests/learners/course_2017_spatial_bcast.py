"""A correct spatial batch norm written for gamma and beta of shape (1, C, 1, 1), as some
course years' notebooks pass them: gamma broadcasts as it comes, the running statistics
are kept as (1, C, 1, 1) too (compared by value, whatever their shape), and dgamma, dbeta
come back in gamma's shape. The grader must pass gamma that way."""

import numpy as np

EXPECTED = {
    "spatial_batchnorm_forward": ("pass", "(1, C, 1, 1) (another course year's shape)"),
    "spatial_batchnorm_backward": ("pass", None),
}


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    N, C, H, W = x.shape
    running_mean = bn_param.get("running_mean", np.zeros((1, C, 1, 1))).reshape(1, C, 1, 1)
    running_var = bn_param.get("running_var", np.zeros((1, C, 1, 1))).reshape(1, C, 1, 1)
    if mode == "train":
        mu = np.mean(x, axis=(0, 2, 3), keepdims=True)
        var = np.var(x, axis=(0, 2, 3), keepdims=True)
        xhat = (x - mu) / np.sqrt(var + eps)
        out = gamma * xhat + beta
        cache = (xhat, gamma, np.sqrt(var + eps))
        bn_param["running_mean"] = momentum * running_mean + (1 - momentum) * mu
        bn_param["running_var"] = momentum * running_var + (1 - momentum) * var
    else:
        out = gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta
        cache = None
    return out, cache


def spatial_batchnorm_backward(dout, cache):
    xhat, gamma, std = cache
    N, C, H, W = dout.shape
    M = N * H * W
    axes = (0, 2, 3)
    dbeta = np.sum(dout, axis=axes, keepdims=True)
    dgamma = np.sum(dout * xhat, axis=axes, keepdims=True)
    dxhat = dout * gamma
    dx = (
        M * dxhat
        - np.sum(dxhat, axis=axes, keepdims=True)
        - xhat * np.sum(dxhat * xhat, axis=axes, keepdims=True)
    ) / (M * std)
    return dx, dgamma, dbeta

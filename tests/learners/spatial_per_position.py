"""Spatial batch norm that normalizes each (c, h, w) position over N only: the
statistics are taken over axis 0 of the 4-D array, not over (0, 2, 3)."""

import numpy as np

EXPECTED = {
    "spatial_batchnorm_forward": ("wrong values", "spatial_per_position"),
    "spatial_batchnorm_backward": ("depends", None),
}


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    eps, momentum = bn_param.get("eps", 1e-5), bn_param.get("momentum", 0.9)
    C = x.shape[1]
    g, b = gamma.reshape(1, C, 1, 1), beta.reshape(1, C, 1, 1)
    if bn_param["mode"] == "train":
        mu = x.mean(axis=0)
        var = x.var(axis=0)
        xhat = (x - mu) / np.sqrt(var + eps)
        batch_mean, batch_var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
        bn_param["running_mean"] = momentum * bn_param["running_mean"] + (1 - momentum) * batch_mean
        bn_param["running_var"] = momentum * bn_param["running_var"] + (1 - momentum) * batch_var
        return g * xhat + b, (xhat, g, np.sqrt(var + eps))
    rm = bn_param["running_mean"].reshape(1, C, 1, 1)
    rv = bn_param["running_var"].reshape(1, C, 1, 1)
    return g * (x - rm) / np.sqrt(rv + eps) + b, None


def spatial_batchnorm_backward(dout, cache):
    xhat, g, std = cache
    N = dout.shape[0]
    dxhat = dout * g
    dx = (N * dxhat - dxhat.sum(axis=0) - xhat * (dxhat * xhat).sum(axis=0)) / (N * std)
    return dx, (dout * xhat).sum(axis=(0, 2, 3)), dout.sum(axis=(0, 2, 3))

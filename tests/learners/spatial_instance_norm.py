"""Spatial batch norm with its statistics per sample and channel, over H and W only
(instance norm): the batch axis is left out."""

import numpy as np

EXPECTED = {"spatial_batchnorm_forward": ("wrong values", "spatial_per_sample")}


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    eps, momentum = bn_param.get("eps", 1e-5), bn_param.get("momentum", 0.9)
    g, b = gamma[None, :, None, None], beta[None, :, None, None]
    if bn_param["mode"] == "test":
        rm = bn_param["running_mean"][None, :, None, None]
        rv = bn_param["running_var"][None, :, None, None]
        return g * (x - rm) / np.sqrt(rv + eps) + b, None
    mu = x.mean(axis=(2, 3), keepdims=True)
    var = x.var(axis=(2, 3), keepdims=True)
    for key, batch in (("running_mean", x.mean(axis=(0, 2, 3))), ("running_var", x.var((0, 2, 3)))):
        bn_param[key] = momentum * bn_param[key] + (1 - momentum) * batch
    return g * (x - mu) / np.sqrt(var + eps) + b, None

"""Right values, but the forward centres x in place (x -= mu: the caller's x changes)
and prints while it runs, and batchnorm_backward scales its cache in place (a second
backward on the same cache would be wrong). Each function gets fresh copies, so the
other backward still passes; the writes are reported as findings."""

import numpy as np

EXPECTED = {
    "batchnorm_forward": ("pass", "finding: writes into its argument x"),
    "batchnorm_backward": ("pass", "finding: writes into its cache"),
    "batchnorm_backward_alt": ("pass", None),
}


def batchnorm_forward(x, gamma, beta, bn_param):
    eps, momentum = bn_param.get("eps", 1e-5), bn_param.get("momentum", 0.9)
    if bn_param["mode"] == "train":
        mu = x.mean(axis=0)
        x -= mu
        var = (x**2).mean(axis=0)
        std = np.sqrt(var + eps)
        print("batch var", var)
        bn_param["running_mean"] = momentum * bn_param["running_mean"] + (1 - momentum) * mu
        bn_param["running_var"] = momentum * bn_param["running_var"] + (1 - momentum) * var
        return gamma * x / std + beta, {"xmu": x, "std": std, "gamma": gamma}
    xhat = (x - bn_param["running_mean"]) / np.sqrt(bn_param["running_var"] + eps)
    return gamma * xhat + beta, None


def batchnorm_backward(dout, cache):
    xhat = cache["xmu"]
    xhat /= cache["std"]  # now the cache holds xhat, not xmu
    N = dout.shape[0]
    dxhat = dout * cache["gamma"]
    dx = (N * dxhat - dxhat.sum(0) - xhat * (dxhat * xhat).sum(0)) / (N * cache["std"])
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


def batchnorm_backward_alt(dout, cache):
    xhat = cache["xmu"] / cache["std"]
    N = dout.shape[0]
    dxhat = dout * cache["gamma"]
    dx = (N * dxhat - dxhat.sum(0) - xhat * (dxhat * xhat).sum(0)) / (N * cache["std"])
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)

"""A correct layers.py in another style: dict caches, keepdims=True
sums flattened at the end, spatial batch norm over axes (0, 2, 3) directly, layer norm as
the transposed batch norm, and group norm written for gamma of shape (C,) (another course
year's API: the grader must notice and pass gamma that way). The tests also grade it
re-indented with 2 spaces.
"""

import numpy as np

EXPECTED = {
    "batchnorm_forward": ("pass", None),
    "batchnorm_backward": ("pass", None),
    "layernorm_forward": ("pass", None),
    "layernorm_backward": ("pass", None),
    "spatial_batchnorm_forward": ("pass", None),
    "spatial_batchnorm_backward": ("pass", None),
    "spatial_groupnorm_forward": ("pass", None),
    "spatial_groupnorm_backward": ("pass", None),
}


def _normalize(x, axes, eps):
    mu = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    inv_std = 1.0 / np.sqrt(var + eps)
    return (x - mu) * inv_std, mu, var, inv_std


def _backward(dxhat, xhat, inv_std, axes):
    m = np.prod([dxhat.shape[a] for a in axes])
    return (
        inv_std
        / m
        * (
            m * dxhat
            - dxhat.sum(axis=axes, keepdims=True)
            - xhat * (dxhat * xhat).sum(axis=axes, keepdims=True)
        )
    )


def batchnorm_forward(x, gamma, beta, bn_param):
    mode = bn_param["mode"]
    eps = bn_param["eps"]  # this year's notebook always sets them
    momentum = bn_param["momentum"]
    D = x.shape[1]
    running_mean = bn_param.get("running_mean", np.zeros(D))
    running_var = bn_param.get("running_var", np.zeros(D))
    if mode == "train":
        xhat, mu, var, inv_std = _normalize(x, (0,), eps)
        out = gamma * xhat + beta
        cache = {"xhat": xhat, "gamma": gamma, "inv_std": inv_std, "axes": (0,)}
        running_mean = momentum * running_mean + (1 - momentum) * mu.ravel()
        running_var = momentum * running_var + (1 - momentum) * var.ravel()
    else:
        out = gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta
        cache = {}
    bn_param["running_mean"], bn_param["running_var"] = running_mean, running_var
    return out, cache


def batchnorm_backward(dout, cache):
    xhat, gamma, inv_std, axes = cache["xhat"], cache["gamma"], cache["inv_std"], cache["axes"]
    dgamma = (dout * xhat).sum(axis=axes, keepdims=True).ravel()
    dbeta = dout.sum(axis=axes, keepdims=True).ravel()
    dx = _backward(dout * gamma, xhat, inv_std, axes)
    return dx, dgamma, dbeta


def layernorm_forward(x, gamma, beta, ln_param):
    # layer norm is batch norm of the transpose, without running statistics
    eps = ln_param.get("eps", 1e-5)
    xhat_t, _, _, inv_std_t = _normalize(x.T, (0,), eps)
    out = gamma * xhat_t.T + beta
    return out, {"xhat_t": xhat_t, "gamma": gamma, "inv_std_t": inv_std_t}


def layernorm_backward(dout, cache):
    xhat = cache["xhat_t"].T
    dgamma = np.sum(dout * xhat, axis=0)
    dbeta = np.sum(dout, axis=0)
    dxhat_t = (dout * cache["gamma"]).T
    dx = _backward(dxhat_t, cache["xhat_t"], cache["inv_std_t"], (0,)).T
    return dx, dgamma, dbeta


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    mode, eps = bn_param["mode"], bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    C = x.shape[1]
    g, b = gamma.reshape(1, C, 1, 1), beta.reshape(1, C, 1, 1)
    rm = bn_param.get("running_mean", np.zeros(C))
    rv = bn_param.get("running_var", np.zeros(C))
    axes = (0, 2, 3)
    if mode == "train":
        xhat, mu, var, inv_std = _normalize(x, axes, eps)
        out = g * xhat + b
        bn_param["running_mean"] = momentum * rm + (1 - momentum) * mu.ravel()
        bn_param["running_var"] = momentum * rv + (1 - momentum) * var.ravel()
        return out, {"xhat": xhat, "gamma": g, "inv_std": inv_std, "axes": axes}
    out = g * (x - rm.reshape(1, C, 1, 1)) / np.sqrt(rv.reshape(1, C, 1, 1) + eps) + b
    return out, {}


def spatial_batchnorm_backward(dout, cache):
    return batchnorm_backward(dout, cache)


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    eps = gn_param.get("eps", 1e-5)
    N, C, H, W = x.shape
    xg = x.reshape(N, G, -1)
    xhat, _, _, inv_std = _normalize(xg, (2,), eps)
    xhat = xhat.reshape(N, C, H, W)
    out = gamma[None, :, None, None] * xhat + beta[None, :, None, None]
    return out, {"xhat": xhat, "gamma": gamma, "inv_std": inv_std, "G": G}


def spatial_groupnorm_backward(dout, cache):
    N, C, H, W = dout.shape
    G, xhat = cache["G"], cache["xhat"]
    dgamma = (dout * xhat).sum(axis=(0, 2, 3))
    dbeta = dout.sum(axis=(0, 2, 3))
    dxhat = (dout * cache["gamma"][None, :, None, None]).reshape(N, G, -1)
    dx = _backward(dxhat, xhat.reshape(N, G, -1), cache["inv_std"], (2,))
    return dx.reshape(N, C, H, W), dgamma, dbeta

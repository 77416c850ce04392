"""A correct layers.py inside the course's package, cs231n/: it imports its sibling with
``from cs231n.layer_utils import *`` and ``from .layer_utils import ...``, as the course
notebook allows (it runs with the assignment's folder on sys.path). Its caches are
objects of a class of its own."""

from cs231n.layer_utils import *  # noqa: F403

from .layer_utils import mean_and_var

EXPECTED = {
    "batchnorm_forward": ("pass", None),
    "batchnorm_backward_alt": ("pass", None),
}


class BatchNormCache:
    def __init__(self, xhat, gamma, inv_std):
        self.xhat, self.gamma, self.inv_std = xhat, gamma, inv_std


def batchnorm_forward(x, gamma, beta, bn_param):
    eps, momentum = bn_param.get("eps", 1e-5), bn_param.get("momentum", 0.9)
    if bn_param["mode"] == "train":
        mu, var = mean_and_var(x, (0,))
        inv_std = 1 / np.sqrt(var + eps)  # noqa: F405 - np comes from layer_utils' *
        rm, rv = bn_param["running_mean"], bn_param["running_var"]
        bn_param["running_mean"] = momentum * rm + (1 - momentum) * mu[0]
        bn_param["running_var"] = momentum * rv + (1 - momentum) * var[0]
        xhat = (x - mu) * inv_std
        return gamma * xhat + beta, BatchNormCache(xhat, gamma, inv_std)
    rm, rv = bn_param["running_mean"], bn_param["running_var"]
    return gamma * (x - rm) / np.sqrt(rv + eps) + beta, None  # noqa: F405


def batchnorm_backward_alt(dout, cache):
    N = dout.shape[0]
    xhat = cache.xhat
    dxhat = dout * cache.gamma
    dx = cache.inv_std / N * (N * dxhat - dxhat.sum(0) - xhat * (dxhat * xhat).sum(0))
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)

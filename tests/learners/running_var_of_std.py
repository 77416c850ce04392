"""The running variance is updated with the standard deviation the forward computed."""

import numpy as np
from course_2019_tuple import batchnorm_backward, batchnorm_backward_alt  # noqa: F401

EXPECTED = {
    "batchnorm_forward": ("wrong values", "running_var_of_std"),
    "batchnorm_backward": ("pass", None),
    "batchnorm_backward_alt": ("pass", None),
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
        sample_mean = np.mean(x, axis=0)
        xmu = x - sample_mean
        sample_var = np.mean(xmu**2, axis=0)
        std = np.sqrt(sample_var + eps)
        xhat = xmu / std
        out = gamma * xhat + beta
        cache = (xhat, gamma, xmu, std, sample_var, eps)
        running_mean = momentum * running_mean + (1 - momentum) * sample_mean
        running_var = momentum * running_var + (1 - momentum) * std
    elif mode == "test":
        xhat = (x - running_mean) / np.sqrt(running_var + eps)
        out = gamma * xhat + beta
    else:
        raise ValueError('Invalid forward batchnorm mode "%s"' % mode)  # noqa: UP031

    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var
    return out, cache

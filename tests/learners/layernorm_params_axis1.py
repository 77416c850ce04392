"""Layer norm whose backward sums dgamma and dbeta over the features (axis 1, the axis
layer norm normalizes over) instead of over the batch."""

import numpy as np
from course_2019_tuple import layernorm_forward  # noqa: F401

EXPECTED = {
    "layernorm_forward": ("pass", None),
    "layernorm_backward": ("wrong values", "params_summed_wrong_axis"),
}


def layernorm_backward(dout, cache):
    xhat, gamma, std = cache
    D = dout.shape[1]
    dgamma = np.sum(dout * xhat, axis=1)
    dbeta = np.sum(dout, axis=1)
    dxhat = dout * gamma
    dx = (
        D * dxhat
        - dxhat.sum(axis=1, keepdims=True)
        - xhat * (dxhat * xhat).sum(axis=1, keepdims=True)
    ) / (D * std)
    return dx, dgamma, dbeta

"""Layer norm's backward copied from batch norm's closed form with N kept: the means in
dx are taken over D values, but it divides by N."""

import numpy as np
from course_2019_tuple import layernorm_forward  # noqa: F401

EXPECTED = {
    "layernorm_forward": ("pass", None),
    "layernorm_backward": ("wrong values", "wrong_count"),
}


def layernorm_backward(dout, cache):
    xhat, gamma, std = cache
    N = dout.shape[0]
    dxhat = dout * gamma
    dx = (
        N * dxhat
        - dxhat.sum(axis=1, keepdims=True)
        - xhat * (dxhat * xhat).sum(axis=1, keepdims=True)
    ) / (N * std)
    return dx, np.sum(dout * xhat, axis=0), np.sum(dout, axis=0)

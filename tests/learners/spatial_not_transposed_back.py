"""Spatial batch norm through the 2-D batch norm: x is transposed to (N, H, W, C) and
flattened, right, but the result is reshaped to (N, C, H, W) without transposing back;
the backward makes the same slip with dx."""

from course_2019_tuple import batchnorm_backward_alt as _bn_backward
from course_2019_tuple import batchnorm_forward as _bn_forward

EXPECTED = {
    "spatial_batchnorm_forward": ("wrong values", "reshape_not_transposed_back"),
    "spatial_batchnorm_backward": ("depends", None),
}


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    N, C, H, W = x.shape
    out, cache = _bn_forward(x.transpose(0, 2, 3, 1).reshape(-1, C), gamma, beta, bn_param)
    return out.reshape(N, C, H, W), cache


def spatial_batchnorm_backward(dout, cache):
    N, C, H, W = dout.shape
    dx, dgamma, dbeta = _bn_backward(dout.transpose(0, 2, 3, 1).reshape(-1, C), cache)
    return dx.reshape(N, C, H, W), dgamma, dbeta

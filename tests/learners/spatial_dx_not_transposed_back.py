"""A right spatial forward, and a backward that reshapes dx to (N, C, H, W) without
transposing it back from (N, H, W, C) order."""

from course_2019_tuple import batchnorm_backward_alt as _bn_backward
from course_2019_tuple import spatial_batchnorm_forward  # noqa: F401

EXPECTED = {
    "spatial_batchnorm_forward": ("pass", None),
    "spatial_batchnorm_backward": ("wrong values", "reshape_not_transposed_back_dx"),
}


def spatial_batchnorm_backward(dout, cache):
    N, C, H, W = dout.shape
    dx, dgamma, dbeta = _bn_backward(dout.transpose(0, 2, 3, 1).reshape(-1, C), cache)
    return dx.reshape(N, C, H, W), dgamma, dbeta

"""Spatial batch norm through the 2-D batch norm, with x reshaped to (N*H*W, C)
directly: each row then mixes channels and positions."""

from course_2019_tuple import batchnorm_forward as _bn_forward

EXPECTED = {"spatial_batchnorm_forward": ("wrong values", "reshape_without_transpose")}


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    N, C, H, W = x.shape
    out, cache = _bn_forward(x.reshape(-1, C), gamma, beta, bn_param)
    return out.reshape(N, C, H, W), cache

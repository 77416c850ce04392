"""Fold an eval-mode batch norm into the linear or convolution layer before it.

In eval mode batch norm is a per-channel affine map, so ``BN(W x + b)`` is one layer::

    r  = 1 / sqrt(running_var + eps)
    W' = W * (gamma * r)                       (scaled along the output-channel axis)
    b' = (b - running_mean) * gamma * r + beta
"""

from __future__ import annotations

import numpy as np

from normgrad.core import validate as v


def fold_batch_norm(
    weight,
    bias,
    running_mean,
    running_var,
    gamma=None,
    beta=None,
    *,
    eps: float = 1e-5,
    out_axis: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(weight', bias')`` such that the folded layer equals layer + eval batch norm.

    Args:
        weight: the layer's weight. ``out_axis`` is its output-channel axis: 0 for
            PyTorch's ``Linear`` ``(out, in)`` and ``Conv`` ``(out, in, *k)`` weights; 1 (or
            -1) for the CS231n convention ``y = x @ W`` with W ``(in, out)``.
        bias: ``(C_out,)`` or None (treated as zeros).
        running_mean, running_var: the batch norm's ``(C_out,)`` running statistics.
        gamma, beta: ``(C_out,)`` or None (scale 1, shift 0).
        eps: the batch norm's eps.

    Returns:
        New arrays (inputs are not modified) in the weight's dtype; computed in float64.
    """
    weight = v.as_float_array("weight", weight)
    v.check_min_ndim("weight", weight, 1, "at least 1 dimension")
    axis = v.check_axis("out_axis", out_axis, weight.ndim, weight.shape)
    c = weight.shape[axis]
    what = f"one value per output channel, weight.shape[{axis}]"
    bias = v.check_param("bias", bias, (c,), what)
    mean = v.check_param("running_mean", running_mean, (c,), what)
    var = v.check_param("running_var", running_var, (c,), what)
    if mean is None or var is None:
        raise ValueError("running_mean and running_var are required to fold a batch norm")
    gamma = v.check_param("gamma", gamma, (c,), what)
    beta = v.check_param("beta", beta, (c,), what)
    eps = v.check_eps(eps)

    f64 = np.float64
    scale = 1.0 / np.sqrt(var.astype(f64) + eps)
    if gamma is not None:
        scale = scale * gamma.astype(f64)
    b = np.zeros(c, f64) if bias is None else bias.astype(f64)
    new_bias = (b - mean.astype(f64)) * scale
    if beta is not None:
        new_bias += beta.astype(f64)
    bcast = [1] * weight.ndim
    bcast[axis] = c
    new_weight = weight.astype(f64) * scale.reshape(bcast)
    return new_weight.astype(weight.dtype), new_bias.astype(weight.dtype)

"""Group norm that groups channel c with the channels c + G, c + 2G, ...: the channels
are reshaped to (C // G, G) instead of (G, C // G). Its backward is right for that
forward, so it can only be judged once the forward is fixed; with G = 1 or G = C the
grouping is right and both pass."""

import numpy as np

EXPECTED = {
    "spatial_groupnorm_forward": ("wrong values", "groups_interleaved"),
    "spatial_groupnorm_backward": ("depends", None),
}


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    eps = gn_param.get("eps", 1e-5)
    N, C, H, W = x.shape
    xg = x.reshape(N, C // G, G, H, W)
    mu = xg.mean(axis=(1, 3, 4), keepdims=True)
    std = np.sqrt(xg.var(axis=(1, 3, 4), keepdims=True) + eps)
    xhat = ((xg - mu) / std).reshape(N, C, H, W)
    return gamma * xhat + beta, (xhat, gamma, std, G)


def spatial_groupnorm_backward(dout, cache):
    xhat, gamma, std, G = cache
    N, C, H, W = dout.shape
    axes = (1, 3, 4)
    M = C // G * H * W
    dxhat = (dout * gamma).reshape(N, C // G, G, H, W)
    xh = xhat.reshape(N, C // G, G, H, W)
    dx = (
        M * dxhat
        - dxhat.sum(axis=axes, keepdims=True)
        - xh * (dxhat * xh).sum(axis=axes, keepdims=True)
    ) / (M * std)
    dgamma = (dout * xhat).sum(axis=(0, 2, 3), keepdims=True)
    return dx.reshape(N, C, H, W), dgamma, dout.sum(axis=(0, 2, 3), keepdims=True)

"""Group norm that squeezes its grouped view: with one group (G = 1) the group axis is
squeezed away too (and with one channel per group, G = C, the channel axis), the
reduction axes no longer exist, and it crashes there only."""

import numpy as np

EXPECTED = {
    "spatial_groupnorm_forward": ("crashed", None),
    "spatial_groupnorm_backward": ("depends", None),
}


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    eps = gn_param.get("eps", 1e-5)
    N, C, H, W = x.shape
    xg = x.reshape(N, G, C // G, H, W).squeeze()
    if N == 1:
        xg = xg[None]
    mu = xg.mean(axis=(2, 3, 4), keepdims=True)
    var = xg.var(axis=(2, 3, 4), keepdims=True)
    xhat = ((xg - mu) / np.sqrt(var + eps)).reshape(N, C, H, W)
    return gamma * xhat + beta, (xhat, gamma, np.sqrt(var + eps), G)


def spatial_groupnorm_backward(dout, cache):
    xhat, gamma, std, G = cache
    N, C, H, W = dout.shape
    M = C // G * H * W
    dxhat = (dout * gamma).reshape(N, G, C // G, H, W)
    xh = xhat.reshape(N, G, C // G, H, W)
    axes = (2, 3, 4)
    dx = (
        M * dxhat
        - dxhat.sum(axis=axes, keepdims=True)
        - xh * (dxhat * xh).sum(axis=axes, keepdims=True)
    ) / (M * std)
    dgamma = (dout * xhat).sum(axis=(0, 2, 3), keepdims=True)
    return dx.reshape(N, C, H, W), dgamma, dout.sum(axis=(0, 2, 3), keepdims=True)

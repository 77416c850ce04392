"""Group norm that reads G as the number of channels in each group."""

import numpy as np
from course_2019_tuple import spatial_groupnorm_backward  # noqa: F401

EXPECTED = {
    "spatial_groupnorm_forward": ("wrong values", "groups_of_size_g"),
    "spatial_groupnorm_backward": ("depends", None),
}


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    eps = gn_param.get("eps", 1e-5)
    N, C, H, W = x.shape
    xg = x.reshape(N, C // G, G, H, W)
    mu = xg.mean(axis=(2, 3, 4), keepdims=True)
    std = np.sqrt(xg.var(axis=(2, 3, 4), keepdims=True) + eps)
    xhat = ((xg - mu) / std).reshape(N, C, H, W)
    return gamma * xhat + beta, (xhat, gamma, std, G)

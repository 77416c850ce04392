"""Group norm that takes its statistics over all the channels of a sample, whatever G
(layer norm over C, H and W): right only when G = 1."""

import numpy as np

EXPECTED = {"spatial_groupnorm_forward": ("wrong values", "groups_ignored")}


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    eps = gn_param.get("eps", 1e-5)
    mu = x.mean(axis=(1, 2, 3), keepdims=True)
    var = x.var(axis=(1, 2, 3), keepdims=True)
    return gamma * (x - mu) / np.sqrt(var + eps) + beta, None

"""Layer norm that takes its statistics over the batch axis, as batch norm does."""

import numpy as np
from course_2019_tuple import layernorm_backward  # noqa: F401

EXPECTED = {
    "layernorm_forward": ("wrong values", "layer_norm_over_batch"),
    "layernorm_backward": ("depends", None),
}


def layernorm_forward(x, gamma, beta, ln_param):
    eps = ln_param.get("eps", 1e-5)
    std = np.sqrt(x.var(axis=0) + eps)
    xhat = (x - x.mean(axis=0)) / std
    return gamma * xhat + beta, (xhat, gamma, std)

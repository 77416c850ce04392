"""The CS231n course's normalization API, with the course's semantics.

A learner can import these in place of their own ``layers.py`` functions and the course
notebooks' checks run unchanged::

    from normgrad.cs231n import batchnorm_forward, batchnorm_backward, batchnorm_backward_alt

Semantics that differ from normgrad's native (PyTorch-style) API (docs/design.md §8):

- ``bn_param["mode"]`` is required: ``"train"`` or ``"test"``.
- ``bn_param["momentum"]`` (default 0.9) weights the *old* running value:
  ``running = momentum * running + (1 - momentum) * batch``.
- The running variance is the *biased* batch variance.
- The running statistics are stored back into ``bn_param`` as new arrays (the arrays that
  were there are not modified), starting from zeros when absent.
- ``spatial_groupnorm_*`` take and return gamma/beta of shape ``(1, C, 1, 1)``.

The caches are normgrad's :class:`~normgrad.core.cache.NormCache`; ``batchnorm_backward``
is the staged (computational-graph) backward and ``batchnorm_backward_alt`` the closed form,
both on the same cache.
"""

from __future__ import annotations

import numpy as np

from normgrad.core import ops
from normgrad.core import validate as v
from normgrad.core.staged import staged_backward

__all__ = [
    "batchnorm_backward",
    "batchnorm_backward_alt",
    "batchnorm_forward",
    "layernorm_backward",
    "layernorm_forward",
    "spatial_batchnorm_backward",
    "spatial_batchnorm_forward",
    "spatial_groupnorm_backward",
    "spatial_groupnorm_forward",
]


def _get_param(name: str, param: object) -> dict:
    if not isinstance(param, dict):
        raise TypeError(f"{name} must be a dict; got {type(param).__name__}")
    return param


def _batchnorm(x, gamma, beta, bn_param):
    bn_param = _get_param("bn_param", bn_param)
    if "mode" not in bn_param:
        raise ValueError('bn_param must contain "mode": "train" or "test"')
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = v.check_momentum(bn_param.get("momentum", 0.9))
    x = v.as_float_array("x", x)
    v.check_min_ndim("x", x, 2, "(N, D) or (N, C, H, W)")
    c = x.shape[1]
    running_mean = bn_param.get("running_mean", np.zeros(c, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.zeros(c, dtype=x.dtype))
    running_mean = v.check_param("running_mean", running_mean, (c,), "one value per feature")
    running_var = v.check_param("running_var", running_var, (c,), "one value per feature")

    if mode == "train":
        out, cache = ops.batch_norm_forward(x, gamma, beta, eps=eps)
        batch_mean = cache.mean.reshape(c)
        batch_var = cache.var.reshape(c)  # biased: the forward used bessel=False
        new_mean = momentum * running_mean + (1 - momentum) * batch_mean
        new_var = momentum * running_var + (1 - momentum) * batch_var
        bn_param["running_mean"] = new_mean.astype(running_mean.dtype)
        bn_param["running_var"] = new_var.astype(running_var.dtype)
    elif mode == "test":
        out, cache = ops.batch_norm_forward(
            x,
            gamma,
            beta,
            training=False,
            running_mean=running_mean,
            running_var=running_var,
            eps=eps,
        )
        bn_param["running_mean"] = running_mean
        bn_param["running_var"] = running_var
    else:
        raise ValueError(f'Invalid forward batchnorm mode "{mode}": expected "train" or "test"')
    return out, cache


def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch norm for ``x`` of shape (N, D); gamma and beta (D,).

    ``bn_param``: ``mode`` ("train"/"test", required), ``eps`` (1e-5), ``momentum`` (0.9,
    weight of the old running value), ``running_mean`` / ``running_var`` (D,), written back.
    Returns ``(out, cache)``.
    """
    x = v.as_float_array("x", x)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, D); got shape {x.shape}")
    return _batchnorm(x, gamma, beta, bn_param)


def batchnorm_backward(dout, cache):
    """The staged backward (Kratzert's nine-step graph, docs/design.md §3).

    Walks the computational graph from step 9 down to step 0. Returns (dx, dgamma, dbeta).
    """
    return staged_backward(dout, cache, op="batch_norm")


def batchnorm_backward_alt(dout, cache):
    """The closed form (docs/design.md §4), on the same cache. Returns (dx, dgamma, dbeta)."""
    return ops.batch_norm_backward(dout, cache)


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """Spatial batch norm for ``x`` of shape (N, C, H, W); gamma and beta (C,).

    Statistics per channel over N, H and W; ``bn_param`` as in :func:`batchnorm_forward`.
    """
    x = v.as_float_array("x", x)
    if x.ndim != 4:
        raise ValueError(f"x must have shape (N, C, H, W); got shape {x.shape}")
    return _batchnorm(x, gamma, beta, bn_param)


def spatial_batchnorm_backward(dout, cache):
    """Backward of :func:`spatial_batchnorm_forward`. Returns (dx, dgamma, dbeta), (C,) each."""
    return ops.batch_norm_backward(dout, cache)


def layernorm_forward(x, gamma, beta, ln_param):
    """Layer norm for ``x`` of shape (N, D); gamma and beta (D,). ``ln_param``: ``eps`` (1e-5).

    Any other key (such as a ``mode`` set by the course's FullyConnectedNet) is ignored:
    layer norm behaves the same in train and test.
    """
    ln_param = _get_param("ln_param", ln_param)
    x = v.as_float_array("x", x)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, D); got shape {x.shape}")
    return ops.layer_norm_forward(x, gamma, beta, eps=ln_param.get("eps", 1e-5))


def layernorm_backward(dout, cache):
    """Backward of :func:`layernorm_forward`. Returns (dx, dgamma, dbeta)."""
    return ops.layer_norm_backward(dout, cache)


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    """Group norm for ``x`` of shape (N, C, H, W) in ``G`` groups; gamma, beta (1, C, 1, 1).

    ``gn_param``: ``eps`` (1e-5); other keys are ignored.
    """
    gn_param = _get_param("gn_param", gn_param)
    x = v.as_float_array("x", x)
    if x.ndim != 4:
        raise ValueError(f"x must have shape (N, C, H, W); got shape {x.shape}")
    c = x.shape[1]
    what = "the course's shape for group-norm parameters"
    gamma = v.check_param("gamma", gamma, (1, c, 1, 1), what)
    beta = v.check_param("beta", beta, (1, c, 1, 1), what)
    flat = [None if p is None else p.reshape(c) for p in (gamma, beta)]
    return ops.group_norm_forward(x, *flat, G, eps=gn_param.get("eps", 1e-5))


def spatial_groupnorm_backward(dout, cache):
    """Backward of :func:`spatial_groupnorm_forward`; dgamma and dbeta are (1, C, 1, 1)."""
    dx, dgamma, dbeta = ops.group_norm_backward(dout, cache)
    c = cache.layout.x_shape[1]
    return dx, *(None if g is None else g.reshape(1, c, 1, 1) for g in (dgamma, dbeta))

"""PyTorch's answers to the same calls, for cross-checking (needs ``torch``; optional).

:func:`reference` runs one normalization forward and backward with PyTorch's autograd and
returns NumPy arrays, mirroring normgrad's functional signatures. Batch norm in any layout
is computed by moving the channel axis to position 1 for ``torch.nn.functional.batch_norm``;
the Bessel-corrected variants, which PyTorch has no kernel for, are composed from torch ops
and differentiated by autograd.
"""

from __future__ import annotations

import importlib.util

import numpy as np


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised only without torch
        raise ImportError(
            "PyTorch comparisons need torch: pip install 'normgrad[torch]' "
            "(on the project's machines: pip install torch==2.13.0)"
        ) from exc
    return torch


def _bessel_norm(torch, x, dims, eps):
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, unbiased=True)
    return (x - mean) / torch.sqrt(var + eps)


def reference(
    op: str,
    x: np.ndarray,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    dy: np.ndarray,
    *,
    eps: float = 1e-5,
    bessel: bool = False,
    training: bool = True,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    momentum: float = 0.1,
    channel_axis: int = 1,
    normalized_ndim: int = 1,
    num_groups: int = 1,
):
    """Forward and backward by PyTorch; returns ``(y, dx, dgamma, dbeta)`` as NumPy arrays.

    ``running_mean``/``running_var`` are updated in place by PyTorch's own rule, so a test
    can compare them with normgrad's after several steps.
    """
    torch = _torch()
    F = torch.nn.functional
    ndim = x.ndim
    if op == "batch_norm":
        axis = channel_axis % ndim
        x = np.moveaxis(x, axis, 1)
        dy = np.moveaxis(dy, axis, 1)
    xt = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
    gt = None if gamma is None else torch.tensor(gamma, requires_grad=True)
    bt = None if beta is None else torch.tensor(beta, requires_grad=True)
    c = x.shape[1] if ndim > 1 else None

    def affine(xhat, shape):
        y = xhat
        if gt is not None:
            y = y * gt.reshape(shape)
        if bt is not None:
            y = y + bt.reshape(shape)
        return y

    chan = (1, c) + (1,) * (ndim - 2) if c is not None else None
    if op == "batch_norm":
        rm = None if running_mean is None else torch.from_numpy(running_mean)
        rv = None if running_var is None else torch.from_numpy(running_var)
        if bessel and training:
            dims = [d for d in range(ndim) if d != 1]
            yt = affine(_bessel_norm(torch, xt, dims, eps), chan)
        else:
            yt = F.batch_norm(xt, rm, rv, gt, bt, training=training, momentum=momentum, eps=eps)
    elif op == "layer_norm":
        shape = x.shape[ndim - normalized_ndim :]
        if bessel:
            dims = list(range(ndim - normalized_ndim, ndim))
            yt = affine(_bessel_norm(torch, xt, dims, eps), shape)
        else:
            yt = F.layer_norm(xt, shape, gt, bt, eps=eps)
    elif op == "group_norm":
        if bessel:
            n = x.shape[0]
            grouped = xt.reshape(n, num_groups, -1)
            xhat = _bessel_norm(torch, grouped, [2], eps).reshape(x.shape)
            yt = affine(xhat, chan)
        else:
            yt = F.group_norm(xt, num_groups, gt, bt, eps=eps)
    elif op == "instance_norm":
        if bessel:
            yt = affine(_bessel_norm(torch, xt, list(range(2, ndim)), eps), chan)
        else:
            yt = F.instance_norm(xt, weight=gt, bias=bt, eps=eps)
    else:
        raise ValueError(f"unknown op {op!r}")

    yt.backward(torch.tensor(np.ascontiguousarray(dy)))

    def out(t):
        return None if t is None else t.detach().numpy()

    y, dx = out(yt), out(xt.grad)
    if op == "batch_norm":
        y, dx = np.moveaxis(y, 1, axis), np.moveaxis(dx, 1, axis)
    return y, dx, out(gt.grad if gt is not None else None), out(bt.grad if bt is not None else None)

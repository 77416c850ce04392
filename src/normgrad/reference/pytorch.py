"""PyTorch's answers to the same calls, for cross-checking (needs ``torch``; optional).

:func:`reference` runs any op of the table (:mod:`normgrad.core.table`) forward and
backward with PyTorch's autograd and returns NumPy arrays; it takes the same keywords as
the op's forward. Each op is computed by its ``torch.nn.functional`` function (the table's
``torch_name``), called by :func:`functional`, the one place that knows how those functions
take their axes. Batch norm in any layout is computed by moving the channel axis to
position 1, where PyTorch wants it. The Bessel-corrected variants, which PyTorch has no
kernel for, are composed from torch ops over the op's reduced axes and differentiated by
autograd.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from normgrad.core.layout import NormLayout
from normgrad.core.table import OpSpec, get_op


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


def functional(
    op: OpSpec | str,
    x,
    weight,
    bias=None,
    *,
    eps: float | None = None,
    training: bool = True,
    running_mean=None,
    running_var=None,
    momentum: float = 0.1,
    **option,
):
    """``torch.nn.functional``'s version of ``op`` on tensors, in normgrad's layout.

    ``option`` is the op's axis keyword, as for normgrad (``channel_axis``,
    ``normalized_ndim``, ``num_groups``); ``eps`` defaults to the op's default (for RMS norm,
    PyTorch's own: the machine epsilon of x's dtype, as normgrad's). Batch norm's channel axis
    is moved to position 1 and the output moved back (both are views, so a channels-last
    input stays channels-last in memory for PyTorch's kernel).
    """
    spec = get_op(op)
    fn = getattr(_torch().nn.functional, spec.torch_name)
    eps = spec.default_eps if eps is None else eps
    value = option.get(spec.option, spec.option_default) if spec.option else None
    if spec.option == "channel_axis":
        axis = value % x.ndim
        y = fn(x.movedim(axis, 1), running_mean, running_var, weight, bias,
               training=training, momentum=momentum, eps=eps)  # fmt: skip
        return y.movedim(1, axis)
    if spec.option == "num_groups":
        return fn(x, value, weight, bias, eps=eps)
    if spec.option == "normalized_ndim":
        shift = (bias,) if spec.has_beta else ()
        return fn(x, tuple(x.shape[x.ndim - value :]), weight, *shift, eps=eps)
    return fn(x, weight=weight, bias=bias, eps=eps)


def _bessel(torch, x, weight, bias, layout: NormLayout, eps: float):
    """The Bessel-corrected normalization over the layout's reduced axes, from torch ops."""
    xw = x.reshape(layout.work_shape)
    dims = list(layout.reduce_axes)
    mean = xw.mean(dim=dims, keepdim=True)
    var = xw.var(dim=dims, keepdim=True, unbiased=True)
    y = (xw - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight.reshape(layout.param_bcast)
    if bias is not None:
        y = y + bias.reshape(layout.param_bcast)
    return y.reshape(layout.x_shape)


def reference(
    op: OpSpec | str,
    x: np.ndarray,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    dy: np.ndarray,
    *,
    eps: float | None = None,
    bessel: bool = False,
    training: bool = True,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    momentum: float = 0.1,
    **option,
):
    """Forward and backward by PyTorch; returns ``(y, dx, dgamma, dbeta)`` as NumPy arrays.

    ``option`` is the op's axis keyword; ``eps`` defaults to the op's default. dgamma and
    dbeta are None where gamma and beta are (dbeta always, for an op without a shift).
    ``running_mean``/``running_var`` are updated in place by PyTorch's own rule, so a test
    can compare them with normgrad's after several steps.
    """
    torch = _torch()
    spec = get_op(op)
    if bessel and not spec.bessel_allowed:
        raise ValueError(f"{spec.name} has no Bessel-corrected variant: pass bessel=False")
    if beta is not None and not spec.has_beta:
        raise ValueError(f"{spec.name} has no shift parameter: pass beta=None")
    eps = spec.default_eps if eps is None else eps  # None: PyTorch's default, as normgrad's
    xt = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
    gt = None if gamma is None else torch.tensor(gamma, requires_grad=True)
    bt = None if beta is None else torch.tensor(beta, requires_grad=True)
    if bessel and training:
        yt = _bessel(torch, xt, gt, bt, spec.layout(x.shape, **option), eps)
    else:
        rm = None if running_mean is None else torch.from_numpy(running_mean)
        rv = None if running_var is None else torch.from_numpy(running_var)
        yt = functional(spec, xt, gt, bt, eps=eps, training=training, running_mean=rm,
                        running_var=rv, momentum=momentum, **option)  # fmt: skip
    yt.backward(torch.tensor(np.ascontiguousarray(dy)))

    def out(t):
        return None if t is None else t.detach().numpy()

    return (
        out(yt),
        out(xt.grad),
        None if gt is None else out(gt.grad),
        None if bt is None else out(bt.grad),
    )


def double_backward_reference(
    op: OpSpec | str,
    x: np.ndarray,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    dy: np.ndarray,
    ddx: np.ndarray | None,
    ddgamma: np.ndarray | None,
    ddbeta: np.ndarray | None,
    *,
    eps: float | None = None,
    bessel: bool = False,
    training: bool = True,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    **option,
):
    """PyTorch's double backward: ``(grad_x, grad_gamma, grad_dy)`` of ``<ddx, dx> +
    <ddgamma, dgamma> + <ddbeta, dbeta>``, by ``torch.autograd.grad`` over a first backward
    taken with ``create_graph=True`` (None cotangents count as zero; grad_gamma is None
    without gamma). The counterpart of :func:`normgrad.double_backward`."""
    torch = _torch()
    spec = get_op(op)
    eps = spec.default_eps if eps is None else eps

    def leaf(a):
        return None if a is None else torch.tensor(np.ascontiguousarray(a), requires_grad=True)

    xt, gt, bt, dyt = leaf(x), leaf(gamma), leaf(beta), leaf(dy)
    if bessel and training:
        yt = _bessel(torch, xt, gt, bt, spec.layout(x.shape, **option), eps)
    else:
        stats = [None if r is None else torch.tensor(r) for r in (running_mean, running_var)]
        yt = functional(spec, xt, gt, bt, eps=eps, training=training, running_mean=stats[0],
                        running_var=stats[1], **option)  # fmt: skip
    wrt = [t for t in (xt, gt, bt) if t is not None]
    firsts = torch.autograd.grad(yt, wrt, dyt, create_graph=True, allow_unused=True)
    cotangents = dict(zip((id(xt), id(gt), id(bt)), (ddx, ddgamma, ddbeta), strict=True))
    outputs, weights = [], []
    for t, first in zip(wrt, firsts, strict=True):
        cot = cotangents[id(t)]
        if cot is not None and first is not None and first.requires_grad:
            outputs.append(first)
            weights.append(torch.tensor(np.ascontiguousarray(cot)))
    inputs = [t for t in (xt, gt, dyt) if t is not None]
    if outputs:
        seconds = torch.autograd.grad(outputs, inputs, weights, allow_unused=True)
    else:
        seconds = [None] * len(inputs)
    by_input = dict(zip((id(t) for t in inputs), seconds, strict=True))

    def out(t, like):
        if t is None:
            return None
        grad = by_input[id(t)]
        return np.zeros(like.shape) if grad is None else grad.detach().numpy()

    return out(xt, x), out(gt, gamma), out(dyt, dy)

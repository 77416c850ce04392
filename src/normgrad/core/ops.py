"""The functional API: batch, layer, group and instance norm, forward and backward.

Every forward returns ``(y, cache)`` and every backward takes ``(dy, cache)`` and returns
``(dx, dgamma, dbeta)``, in the style of ``torch.nn.functional`` and the CS231n course.
Each op is a thin description of axes (:mod:`normgrad.core.layout`) over one shared
implementation (:mod:`normgrad.core.normalize`); ``*_backward`` is the closed form and
``*_backward_staged`` walks seed 002's graph node by node (:mod:`normgrad.core.staged`).

Conventions (DESIGN.md §2):

- Inputs are never modified. The only arrays written are ``running_mean`` and
  ``running_var`` passed to :func:`batch_norm_forward` in training mode, updated in place.
- Running statistics follow PyTorch: ``running = (1 - momentum) * running + momentum *
  batch`` (momentum weights the *new* batch), and the running variance is the unbiased
  batch variance ``var * M / (M - 1)``. The CS231n convention (momentum weights the old
  value, biased variance) lives in :mod:`normgrad.cs231n`.
- ``bessel=False`` (default) normalizes with the biased variance ``sum((x-mu)^2) / M``, as
  the paper, PyTorch and CS231n do; ``bessel=True`` divides by ``M - 1``, the convention
  under seed 000's final formula, and its backward is the matching gradient.
- float16 input is computed in float32 and returned as float16; reductions accumulate in
  float64.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from normgrad import kernels
from normgrad.core import fused
from normgrad.core import validate as v
from normgrad.core.layout import (
    NormLayout,
    batch_norm_layout,
    group_norm_layout,
    instance_norm_layout,
    layer_norm_layout,
)
from normgrad.core.normalize import (
    NormCache,
    check_cache,
    check_dy,
    normalize_backward,
    normalize_forward,
)
from normgrad.core.staged import staged_backward

Grads = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]


def _check_training(training: Any) -> bool:
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"training must be True or False; got {training!r}")
    return bool(training)


def _check_bessel(bessel: Any) -> bool:
    if not isinstance(bessel, (bool, np.bool_)):
        raise TypeError(f"bessel must be True or False; got {bessel!r}")
    return bool(bessel)


def _require_values(layout: NormLayout, *, at_least_two: bool, bessel: bool) -> None:
    """A variance needs two values per group (and M - 1 > 0 under Bessel's correction)."""
    if at_least_two or bessel:
        v.check_enough_values(layout.op, layout.x_shape, layout.count, bessel)
    elif layout.count == 0:
        raise ValueError(
            f"{layout.op}: there are no values to normalize over in an input of shape "
            f"{layout.x_shape}"
        )


def _affine_params(layout: NormLayout, gamma, beta, what: str):
    gamma = v.check_param("gamma", gamma, layout.param_shape, what)
    beta = v.check_param("beta", beta, layout.param_shape, what)
    return gamma, beta


def _normalize_with_own_stats(
    layout, x, gamma, beta, *, eps, bessel, what, at_least_two, backend=None
):
    """Layer, group and instance norm: validate the rest, then normalize with the input's
    own statistics (they have no running statistics and no eval mode)."""
    gamma, beta = _affine_params(layout, gamma, beta, what)
    bessel = _check_bessel(bessel)
    eps = v.check_eps(eps)
    _require_values(layout, at_least_two=at_least_two, bessel=bessel)
    use_fused = kernels.resolve(backend, x.size) == "numba" and fused.rows_supported(layout)
    forward = fused.rows_forward if use_fused else normalize_forward
    y, cache, _ = forward(x, gamma, beta, layout, eps=eps, bessel=bessel)
    return y, cache


def _backward(dy, cache, op):
    cache = check_cache(cache, op)
    if cache.backend == "numba":
        return fused.backward_any(check_dy(dy, cache).reshape(cache.layout.x_shape), cache)
    return normalize_backward(dy, cache)


# --------------------------------------------------------------------------- batch norm


def batch_norm_forward(
    x,
    gamma,
    beta,
    *,
    training: bool = True,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    momentum: float = 0.1,
    eps: float = 1e-5,
    channel_axis: int = 1,
    bessel: bool = False,
    backend: str | None = None,
    comm=None,
) -> tuple[np.ndarray, NormCache]:
    """Batch normalization: per-channel statistics over the batch and spatial axes.

    Args:
        x: ``(N, D)``, ``(N, C, L)``, ``(N, C, H, W)``, ``(N, C, D, H, W)``, or any layout with
            the channel axis given by ``channel_axis`` (``-1`` for channels-last, NHWC).
        gamma, beta: ``(C,)`` or None (no scale / no shift; the matching gradient is None).
        training: True normalizes with the batch's statistics (and updates the running
            arrays if given); False normalizes with ``running_mean``/``running_var``.
        running_mean, running_var: ``(C,)`` float arrays or None. **Updated in place** in
            training mode, PyTorch's convention: ``run = (1 - momentum) * run + momentum *
            batch``, with the *unbiased* batch variance. Required when ``training=False``.
        momentum: weight of the new batch in the running update, in [0, 1] (PyTorch's
            convention; CS231n's ``momentum=0.9`` corresponds to ``0.1`` here).
        eps: added to the variance under the square root, > 0.
        channel_axis: the channel axis of ``x``; default 1 (N, C, ...); -1 for channels-last.
        bessel: normalize with the Bessel-corrected variance ``/ (M - 1)`` instead of ``/ M``.
        backend: ``"auto"`` (default; or the ``NORMGRAD_BACKEND`` environment variable:
            Numba's fused kernels for arrays of 32768 elements or more when Numba is
            installed, else NumPy), ``"numpy"`` or ``"numba"`` (``pip install
            'normgrad[fast]'``). The backward uses the backend its cache was made with.
        comm: an mpi4py communicator for synchronized batch norm (data-parallel): the
            statistics are those of the concatenation of every rank's x (ranks may hold
            different N, even 0), in one collective per pass; the running statistics come
            out identical on every rank. The backward all-reduces its two sums in one
            collective and returns this rank's own dgamma/dbeta contributions (sum them
            across ranks with the other gradients). Uses the NumPy path.

    Returns:
        ``(y, cache)``: y with x's shape and dtype, and the :class:`NormCache` for
        :func:`batch_norm_backward` or :func:`batch_norm_backward_staged`.

    Raises:
        ValueError: bad shapes or values, or one value per channel when training (or with
            ``bessel=True``), naming the argument and the shape.
        TypeError: non-float arrays or wrongly typed arguments.
    """
    x = v.as_float_array("x", x)
    v.check_min_ndim("x", x, 2, "(N, C, ...) with at least 2 dimensions")
    axis = v.check_axis("channel_axis", channel_axis, x.ndim, x.shape)
    layout = batch_norm_layout(x.shape, axis)
    gamma, beta = _affine_params(layout, gamma, beta, f"one value per channel, x.shape[{axis}]")
    training = _check_training(training)
    bessel = _check_bessel(bessel)
    eps = v.check_eps(eps)
    momentum = v.check_momentum(momentum)
    running_mean = v.check_running("running_mean", running_mean, layout.param_shape)
    running_var = v.check_running("running_var", running_var, layout.param_shape)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together, or neither")
    # The synchronized statistics live in the NumPy path; so does everything small.
    if comm is None and kernels.resolve(backend, x.size) == "numba":
        forward = fused.forward
    else:
        forward = functools.partial(normalize_forward, comm=comm)

    if not training:
        if running_mean is None:
            raise ValueError(
                "training=False normalizes with running statistics: pass running_mean and "
                "running_var"
            )
        y, cache, _ = forward(
            x, gamma, beta, layout, eps=eps, bessel=bessel, stats=(running_mean, running_var)
        )
        return y, cache

    if comm is None:  # with comm the count that matters is the global one, checked there
        _require_values(layout, at_least_two=True, bessel=bessel)
    y, cache, mom = forward(x, gamma, beta, layout, eps=eps, bessel=bessel)
    if running_mean is not None:
        c = layout.param_shape
        batch_mean = mom.mean.reshape(c)
        unbiased_var = mom.m2.reshape(c) / (mom.count - 1)
        running_mean[...] = (1.0 - momentum) * running_mean + momentum * batch_mean
        running_var[...] = (1.0 - momentum) * running_var + momentum * unbiased_var
    return y, cache


def batch_norm_backward(dy, cache: NormCache) -> Grads:
    """Closed-form batch-norm backward (seed 001; Bessel's variant when the forward used it).

    Args:
        dy: upstream gradient, the shape of y.
        cache: from :func:`batch_norm_forward`.

    Returns:
        ``(dx, dgamma, dbeta)``: dx with x's shape and dtype; dgamma and dbeta ``(C,)``, summed
        over the batch and spatial axes, or None where gamma/beta were None.
    """
    return _backward(dy, cache, "batch_norm")


def batch_norm_backward_staged(dy, cache: NormCache, *, return_steps: bool = False):
    """Batch-norm backward through seed 002's nine graph nodes, step 9 down to step 0.

    Same result as :func:`batch_norm_backward` (to rounding). With ``return_steps=True``
    also returns the list of :class:`~normgrad.core.staged.Step` records, one per node,
    holding the intermediate gradients.
    """
    return staged_backward(dy, cache, return_steps=return_steps, _op="batch_norm")


# --------------------------------------------------------------------------- layer norm


def layer_norm_forward(
    x,
    gamma,
    beta,
    *,
    normalized_ndim: int = 1,
    eps: float = 1e-5,
    bessel: bool = False,
    backend: str | None = None,
) -> tuple[np.ndarray, NormCache]:
    """Layer normalization over the last ``normalized_ndim`` axes of each sample.

    Args:
        x: ``(..., *normalized)``, e.g. ``(N, D)`` or ``(N, C, H, W)`` with
            ``normalized_ndim=3``.
        gamma, beta: elementwise affine of shape ``x.shape[-normalized_ndim:]``, or None.
        eps: added to the variance under the square root, > 0.
        bessel: use the Bessel-corrected variance.
        backend: as for :func:`batch_norm_forward`.

    Returns:
        ``(y, cache)``; there are no running statistics (train and eval are the same).
    """
    x = v.as_float_array("x", x)
    k = v.check_positive_int("normalized_ndim", normalized_ndim)
    v.check_min_ndim("x", x, k, f"(..., *normalized) with at least normalized_ndim={k} dims")
    return _normalize_with_own_stats(
        layer_norm_layout(x.shape, k), x, gamma, beta, eps=eps, bessel=bessel,
        what=f"the last {k} dims of x", at_least_two=False, backend=backend,
    )  # fmt: skip


def layer_norm_backward(dy, cache: NormCache) -> Grads:
    """Closed-form layer-norm backward; dgamma/dbeta have the normalized shape."""
    return _backward(dy, cache, "layer_norm")


def layer_norm_backward_staged(dy, cache: NormCache, *, return_steps: bool = False):
    """Layer-norm backward through seed 002's nodes (see :func:`batch_norm_backward_staged`)."""
    return staged_backward(dy, cache, return_steps=return_steps, _op="layer_norm")


# --------------------------------------------------------------------------- group norm


def group_norm_forward(
    x,
    gamma,
    beta,
    num_groups: int,
    *,
    eps: float = 1e-5,
    bessel: bool = False,
    backend: str | None = None,
) -> tuple[np.ndarray, NormCache]:
    """Group normalization: per (sample, group) statistics, per-channel affine.

    Args:
        x: ``(N, C, *spatial)``; the C channels are split into ``num_groups`` consecutive
            groups of ``C // num_groups``.
        gamma, beta: ``(C,)`` or None.
        num_groups: a positive divisor of C.
        eps: added to the variance under the square root, > 0.
        bessel: use the Bessel-corrected variance.
        backend: as for :func:`batch_norm_forward`.
    """
    x = v.as_float_array("x", x)
    v.check_min_ndim("x", x, 2, "(N, C, *spatial) with at least 2 dimensions")
    g = v.check_positive_int("num_groups", num_groups)
    c = x.shape[1]
    if c % g:
        raise ValueError(
            f"num_groups={g} must divide the number of channels C={c} (x.shape[1], "
            f"x of shape {x.shape})"
        )
    return _normalize_with_own_stats(
        group_norm_layout(x.shape, g), x, gamma, beta, eps=eps, bessel=bessel,
        what="one value per channel, x.shape[1]", at_least_two=False, backend=backend,
    )  # fmt: skip


def group_norm_backward(dy, cache: NormCache) -> Grads:
    """Closed-form group-norm backward; dgamma/dbeta are ``(C,)``.

    The affine is per channel but the reduction per group, so dxhat is formed first and the
    batch-norm shortcut (``sum(dxhat) = gamma * dbeta``) does not apply.
    """
    return _backward(dy, cache, "group_norm")


def group_norm_backward_staged(dy, cache: NormCache, *, return_steps: bool = False):
    """Group-norm backward through seed 002's nodes (see :func:`batch_norm_backward_staged`)."""
    return staged_backward(dy, cache, return_steps=return_steps, _op="group_norm")


# ------------------------------------------------------------------------ instance norm


def instance_norm_forward(
    x, gamma, beta, *, eps: float = 1e-5, bessel: bool = False, backend: str | None = None
) -> tuple[np.ndarray, NormCache]:
    """Instance normalization: per (sample, channel) statistics over the spatial axes.

    Args:
        x: ``(N, C, *spatial)`` with at least one spatial axis and more than one spatial
            element (as PyTorch requires).
        gamma, beta: ``(C,)`` or None.
    """
    x = v.as_float_array("x", x)
    v.check_min_ndim("x", x, 3, "(N, C, *spatial) with at least one spatial dimension")
    # PyTorch, too, refuses one spatial element per (sample, channel).
    return _normalize_with_own_stats(
        instance_norm_layout(x.shape), x, gamma, beta, eps=eps, bessel=bessel,
        what="one value per channel, x.shape[1]", at_least_two=True, backend=backend,
    )  # fmt: skip


def instance_norm_backward(dy, cache: NormCache) -> Grads:
    """Closed-form instance-norm backward; dgamma/dbeta are ``(C,)``."""
    return _backward(dy, cache, "instance_norm")


def instance_norm_backward_staged(dy, cache: NormCache, *, return_steps: bool = False):
    """Instance-norm backward through seed 002's nodes."""
    return staged_backward(dy, cache, return_steps=return_steps, _op="instance_norm")

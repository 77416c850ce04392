"""The functional API: batch, layer, group, instance and RMS norm, forward and backward.

Every forward returns ``(y, cache)`` and every backward takes ``(dy, cache)`` and returns
``(dx, dgamma, dbeta)``, in the style of ``torch.nn.functional`` and the CS231n course.
Each op is an entry of the table of ops (:mod:`normgrad.core.table`) run by one generic
:func:`forward` and :func:`backward`, which choose a backend object once
(:mod:`normgrad.backends`); ``*_backward`` is the closed form and ``*_backward_staged``
walks the computational graph node by node (:mod:`normgrad.core.staged`). The public
functions below only give each op its familiar signature and docstring.

Conventions (docs/design.md §8, §9, §10):

- Inputs are never modified. The only arrays written are ``running_mean`` and
  ``running_var`` passed to :func:`batch_norm_forward` in training mode, updated in place.
- Running statistics follow PyTorch: ``running = (1 - momentum) * running + momentum *
  batch`` (momentum weights the *new* batch), and the running variance is the unbiased
  batch variance ``var * M / (M - 1)``. The CS231n convention (momentum weights the old
  value, biased variance) lives in :mod:`normgrad.cs231n`.
- ``bessel=False`` (default) normalizes with the biased variance ``sum((x-mu)^2) / M``, as
  the paper, PyTorch and CS231n do; ``bessel=True`` divides by ``M - 1``, the convention
  under the Bessel-corrected formula, and its backward is the matching gradient. RMS norm
  has no mean and no Bessel variant.
- float16 input is computed in float32 and returned as float16; reductions accumulate in
  float64.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from normgrad import backends
from normgrad.core import validate as v
from normgrad.core.cache import NormCache, check_cache
from normgrad.core.layout import NormLayout
from normgrad.core.staged import staged_backward
from normgrad.core.table import (
    BATCH_NORM,
    GROUP_NORM,
    INSTANCE_NORM,
    LAYER_NORM,
    RMS_NORM,
    OpSpec,
    get_op,
)
from normgrad.errors import NonFiniteStatisticsWarning

Grads = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]


def _check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {value!r}")
    return bool(value)


def _check_count(spec: OpSpec, layout: NormLayout, *, training: bool, bessel: bool) -> None:
    """A variance needs two values per group (and M - 1 > 0 under Bessel's correction).
    Empty inputs never get here: they have no groups (:func:`_empty_forward`)."""
    if (training and spec.min_values > 1) or bessel:
        v.check_enough_values(spec, layout.x_shape, layout.count, bessel)


def forward(
    op: OpSpec | str,
    x,
    gamma,
    beta=None,
    *,
    eps: float | None = None,
    bessel: bool = False,
    backend: str | None = None,
    training: bool = True,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    momentum: float = 0.1,
    skip_nonfinite: bool = True,
    comm=None,
    **option,
) -> tuple[np.ndarray, NormCache]:
    """Any op's forward pass: validate, pick a backend once, normalize, update running stats.

    ``option`` is the op's axis keyword (``channel_axis``, ``normalized_ndim`` or
    ``num_groups``); the batch-norm keywords (``training``, the running statistics and
    ``comm``) are refused by ops without running statistics, which ignore
    ``skip_nonfinite``. See the op's public function for the rest.
    """
    y, cache, _updated = forward_updating(
        op, x, gamma, beta, eps=eps, bessel=bessel, backend=backend, training=training,
        running_mean=running_mean, running_var=running_var, momentum=momentum,
        skip_nonfinite=skip_nonfinite, comm=comm, **option,
    )  # fmt: skip
    return y, cache


def forward_updating(
    op: OpSpec | str,
    x,
    gamma,
    beta=None,
    *,
    eps: float | None = None,
    bessel: bool = False,
    backend: str | None = None,
    training: bool = True,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    momentum: float = 0.1,
    skip_nonfinite: bool = True,
    comm=None,
    **option,
) -> tuple[np.ndarray, NormCache, bool]:
    """:func:`forward`, also saying whether the running statistics were updated (False in
    eval mode, without running arrays, for an empty batch, and for a skipped non-finite
    one), so a layer counts only the batches that went into its averages."""
    spec = get_op(op)
    unknown = set(option) - {spec.option}
    if unknown:
        raise TypeError(f"{spec.name}_forward got an unexpected keyword {sorted(unknown)[0]!r}")
    x = v.as_float_array("x", x)
    layout = spec.make_layout(x.shape, spec.check_input(x, spec._option(option)))
    what = spec.param_words
    if spec.running_stats:  # batch norm: say which axis is the channel's
        what = f"{what}, x.shape[{layout.channel_axis}]"
    gamma = v.check_param("gamma", gamma, layout.param_shape, what)
    if beta is not None and not spec.has_beta:
        raise TypeError(f"{spec.name} has no shift parameter: pass beta=None")
    beta = v.check_param("beta", beta, layout.param_shape, what)
    bessel = _check_flag("bessel", bessel)
    if bessel and not spec.bessel_allowed:
        raise ValueError(f"{spec.name} has no Bessel-corrected variant: pass bessel=False")
    eps = v.check_eps(_default_eps(spec, x) if eps is None else eps)
    training = _check_flag("training", training)
    skip_nonfinite = _check_flag("skip_nonfinite", skip_nonfinite)

    if not spec.running_stats:
        if not training or running_mean is not None or running_var is not None or comm:
            raise TypeError(
                f"{spec.name} has no running statistics: training, running_mean, "
                "running_var and comm are for batch_norm"
            )
        if x.size == 0:
            return (*_empty_forward(x, gamma, beta, layout, eps=eps, bessel=bessel), False)
        _check_count(spec, layout, training=True, bessel=bessel)
        chosen = backends.choose(backend, x.size, layout)
        y, cache, _ = chosen.forward(x, gamma, beta, layout, eps=eps, bessel=bessel)
        return y, cache, False

    # Eval mode reads the running statistics and ignores momentum: it accepts read-only
    # arrays and any momentum, as PyTorch does.
    if training:
        momentum = v.check_momentum(momentum)
    running_mean = v.check_running(
        "running_mean", running_mean, layout.param_shape, written=training
    )
    running_var = v.check_running("running_var", running_var, layout.param_shape, written=training)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together, or neither")
    if running_mean is not None and np.shares_memory(running_mean, running_var):
        raise ValueError(
            "running_mean and running_var share memory (the same array, or overlapping "
            "views): each is updated in place, so pass two separate arrays"
        )
    v.check_comm(comm)
    # The synchronized statistics live in the NumPy backend; so does everything small.
    chosen = backends.choose(backend, x.size, layout, comm=comm)

    if not training:
        if running_mean is None:
            raise ValueError(
                "training=False normalizes with running statistics: pass running_mean and "
                "running_var"
            )
        stats = (running_mean, running_var)
        y, cache, _ = chosen.forward(x, gamma, beta, layout, eps=eps, bessel=bessel, stats=stats)
        return y, cache, False

    if comm is None:  # with comm the count that matters is the global one, checked there
        if x.size == 0:  # PyTorch: an empty output, the running statistics left alone
            return (*_empty_forward(x, gamma, beta, layout, eps=eps, bessel=bessel), False)
        _check_count(spec, layout, training=True, bessel=bessel)
    y, cache, mom = chosen.forward(x, gamma, beta, layout, eps=eps, bessel=bessel, comm=comm)
    updated = False
    if running_mean is not None:
        c = layout.param_shape
        updated = update_running_stats(
            running_mean, running_var, mom.mean.reshape(c), mom.m2.reshape(c) / (mom.count - 1),
            momentum, skip_nonfinite=skip_nonfinite,
        )  # fmt: skip
    return y, cache, updated


def update_running_stats(
    running_mean: np.ndarray,
    running_var: np.ndarray,
    batch_mean: np.ndarray,
    unbiased_var: np.ndarray,
    momentum: float,
    *,
    skip_nonfinite: bool = True,
) -> bool:
    """``running = (1 - momentum) * running + momentum * batch``, in place, for both arrays.

    With ``skip_nonfinite`` (the default), an update that would leave NaN or Inf in either
    array *in its own dtype* (a batch with NaN/Inf, or a float32 variance beyond 3.4e38) is
    not made: both arrays keep their values, a :class:`NonFiniteStatisticsWarning` says
    why, and the result is False. PyTorch makes the update regardless
    (``skip_nonfinite=False``). Returns whether the arrays were written.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        new_mean = ((1.0 - momentum) * running_mean + momentum * batch_mean).astype(
            running_mean.dtype, copy=False
        )
        new_var = ((1.0 - momentum) * running_var + momentum * unbiased_var).astype(
            running_var.dtype, copy=False
        )
    if skip_nonfinite and not (np.all(np.isfinite(new_mean)) and np.all(np.isfinite(new_var))):
        bad = (
            "NaN/Inf"
            if not np.all(np.isfinite(batch_mean) & np.isfinite(unbiased_var))
            else (f"a running statistic beyond the range of {running_var.dtype}")
        )
        warnings.warn(
            f"running statistics not updated: this batch gives {bad} (channels "
            f"{_nonfinite_channels(new_mean, new_var)}); pass skip_nonfinite=False to update "
            "them anyway, as PyTorch does",
            NonFiniteStatisticsWarning,
            stacklevel=3,
        )
        return False
    running_mean[...] = new_mean
    running_var[...] = new_var
    return True


def _nonfinite_channels(new_mean: np.ndarray, new_var: np.ndarray) -> str:
    bad = np.flatnonzero(~(np.isfinite(new_mean) & np.isfinite(new_var)))
    shown = ", ".join(str(int(i)) for i in bad[:5])
    return shown + (f", ... ({bad.size} in all)" if bad.size > 5 else "")


def _empty_forward(x, gamma, beta, layout: NormLayout, *, eps: float, bessel: bool):
    """An input with no elements, as PyTorch: an empty y whose backward gives an empty dx
    and zero dgamma/dbeta. With no values there are no statistics; the cache is that of
    the affine map with mean 0 and variance 1 (there is nothing for them to scale)."""
    stats = (np.zeros(layout.stats_shape), np.ones(layout.stats_shape))
    y, cache, _ = backends.NUMPY.forward(
        x, gamma, beta, layout, eps=eps, bessel=bessel, stats=stats
    )
    return y, cache


def _default_eps(spec: OpSpec, x: np.ndarray) -> float:
    """The op's default eps; RMS norm's is the machine epsilon of x's dtype, as PyTorch's."""
    return spec.default_eps if spec.default_eps is not None else float(np.finfo(x.dtype).eps)


def backward(op: OpSpec | str | None, dy, cache: NormCache) -> Grads:
    """Closed-form ``(dx, dgamma, dbeta)`` on the backend that made ``cache``.

    ``op`` (if not None) must be the op the cache came from.
    """
    cache = check_cache(cache, None if op is None else get_op(op).name)
    return cache.backend.backward(dy, cache)


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
    skip_nonfinite: bool = True,
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
        skip_nonfinite: True (default): a training batch whose statistics are NaN/Inf, or
            that would make a running statistic NaN/Inf in its dtype, leaves the running
            arrays as they were and warns (:class:`normgrad.errors.NonFiniteStatisticsWarning`).
            This goes beyond PyTorch, which updates them regardless (False).
        comm: an mpi4py communicator for synchronized batch norm (data-parallel): the
            statistics are those of the concatenation of every rank's x (ranks may hold
            different N, even 0), in one collective per pass; the running statistics come
            out identical on every rank. The backward all-reduces its two sums in one
            collective and returns this rank's own dgamma/dbeta contributions (sum them
            across ranks with the other gradients). Uses the NumPy path.

    Returns:
        ``(y, cache)``: y with x's shape and dtype, and the :class:`NormCache` for
        :func:`batch_norm_backward` or :func:`batch_norm_backward_staged`. An empty x
        (N = 0, or no spatial elements) gives an empty y, as PyTorch: its backward gives an
        empty dx and zero dgamma/dbeta, and the running statistics are not touched. Eval
        mode only reads the running arrays (read-only ones are fine) and ignores momentum.

    Raises:
        ValueError: bad shapes or values, or one value per channel when training (or with
            ``bessel=True``), naming the argument and the shape.
        TypeError: non-float arrays or wrongly typed arguments.
    """
    return forward(
        BATCH_NORM, x, gamma, beta, training=training, running_mean=running_mean,
        running_var=running_var, momentum=momentum, eps=eps, channel_axis=channel_axis,
        bessel=bessel, backend=backend, skip_nonfinite=skip_nonfinite, comm=comm,
    )  # fmt: skip


def batch_norm_backward(dy, cache: NormCache) -> Grads:
    """Closed-form batch-norm backward (Bessel's variant when the forward used it).

    Args:
        dy: upstream gradient, the shape of y.
        cache: from :func:`batch_norm_forward`.

    Returns:
        ``(dx, dgamma, dbeta)``: dx with x's shape and dtype; dgamma and dbeta ``(C,)``, summed
        over the batch and spatial axes, or None where gamma/beta were None.
    """
    return backward(BATCH_NORM, dy, cache)


def batch_norm_backward_staged(dy, cache: NormCache, *, return_steps: bool = False):
    """Batch-norm backward through the nine nodes of its computational graph, step 9 down to step 0.

    Same result as :func:`batch_norm_backward` (to rounding). With ``return_steps=True``
    also returns the list of :class:`~normgrad.core.staged.Step` records, one per node,
    holding the intermediate gradients.
    """
    return staged_backward(dy, cache, return_steps=return_steps, op="batch_norm")


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
    return forward(
        LAYER_NORM, x, gamma, beta, normalized_ndim=normalized_ndim, eps=eps, bessel=bessel,
        backend=backend,
    )  # fmt: skip


def layer_norm_backward(dy, cache: NormCache) -> Grads:
    """Closed-form layer-norm backward; dgamma/dbeta have the normalized shape."""
    return backward(LAYER_NORM, dy, cache)


def layer_norm_backward_staged(dy, cache: NormCache, *, return_steps: bool = False):
    """Layer-norm backward through the staged graph (see :func:`batch_norm_backward_staged`)."""
    return staged_backward(dy, cache, return_steps=return_steps, op="layer_norm")


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
    return forward(
        GROUP_NORM, x, gamma, beta, num_groups=num_groups, eps=eps, bessel=bessel,
        backend=backend,
    )  # fmt: skip


def group_norm_backward(dy, cache: NormCache) -> Grads:
    """Closed-form group-norm backward; dgamma/dbeta are ``(C,)``.

    The affine is per channel but the reduction per group, so dxhat is formed first and the
    batch-norm shortcut (``sum(dxhat) = gamma * dbeta``) does not apply.
    """
    return backward(GROUP_NORM, dy, cache)


def group_norm_backward_staged(dy, cache: NormCache, *, return_steps: bool = False):
    """Group-norm backward through the staged graph (see :func:`batch_norm_backward_staged`)."""
    return staged_backward(dy, cache, return_steps=return_steps, op="group_norm")


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
    return forward(INSTANCE_NORM, x, gamma, beta, eps=eps, bessel=bessel, backend=backend)


def instance_norm_backward(dy, cache: NormCache) -> Grads:
    """Closed-form instance-norm backward; dgamma/dbeta are ``(C,)``."""
    return backward(INSTANCE_NORM, dy, cache)


def instance_norm_backward_staged(dy, cache: NormCache, *, return_steps: bool = False):
    """Instance-norm backward through the staged graph."""
    return staged_backward(dy, cache, return_steps=return_steps, op="instance_norm")


# ----------------------------------------------------------------------------- RMS norm


def rms_norm_forward(
    x,
    gamma,
    *,
    eps: float | None = None,
    normalized_ndim: int = 1,
    backend: str | None = None,
) -> tuple[np.ndarray, NormCache]:
    """RMS normalization over the last ``normalized_ndim`` axes, as
    ``torch.nn.functional.rms_norm``: ``y = gamma * x / sqrt(mean(x^2) + eps)``.

    Nothing is subtracted: the statistic is the root mean square around zero, and there is
    no shift (beta) and no Bessel variant.

    Args:
        x: ``(..., *normalized)``.
        gamma: elementwise scale of shape ``x.shape[-normalized_ndim:]``, or None.
        eps: added to the mean square under the root, > 0. Default (None): the machine
            epsilon of x's dtype, ``np.finfo(x.dtype).eps``, as PyTorch.
        normalized_ndim: how many trailing axes are normalized together.
        backend: as for :func:`batch_norm_forward`.

    Returns:
        ``(y, cache)``; y has x's shape and dtype.
    """
    return forward(
        RMS_NORM, x, gamma, None, normalized_ndim=normalized_ndim, eps=eps, backend=backend
    )


def rms_norm_backward(dy, cache: NormCache) -> tuple[np.ndarray, np.ndarray | None]:
    """Closed-form RMS-norm backward: ``(dx, dgamma)`` (dgamma None if gamma was None)::

    dx = (r / M) * (M * dxhat - xhat * sum(dxhat * xhat)),  dxhat = dy * gamma
    """
    dx, dgamma, _ = backward(RMS_NORM, dy, cache)
    return dx, dgamma


def rms_norm_backward_staged(dy, cache: NormCache, *, return_steps: bool = False):
    """RMS-norm backward through its staged graph (no mean node): ``(dx, dgamma[, steps])``."""
    dx, dgamma, _dbeta, *steps = staged_backward(
        dy, cache, return_steps=return_steps, op="rms_norm"
    )
    return (dx, dgamma, *steps)

"""Each normalization is a description of axes, nothing more.

A :class:`NormLayout` says how to view ``x`` (``work_shape``; only group norm reshapes),
which axes of that view are reduced for the statistics (``reduce_axes``), and how the
affine parameters broadcast against it (``param_shape`` as the user passes them,
``param_bcast`` in the view). The shared routines in :mod:`normgrad.backends.numpy_backend` and
:mod:`normgrad.core.staged` work from a layout alone, so batch, layer, group and
instance norm share one forward, one closed-form backward and one staged backward.

==============  ==========================  ===============================  ==============
op              x                           reduce_axes (of the view)        gamma, beta
==============  ==========================  ===============================  ==============
batch norm      any, channel at ``axis``    every axis but the channel       (C,)
layer norm      (..., *normalized)          the last ``normalized_ndim``     normalized
group norm      (N, C, *S) -> (N,G,C/G,*S)  C/G and spatial                  (C,)
instance norm   (N, C, *S)                  spatial                          (C,)
RMS norm        (..., *normalized)          the last ``normalized_ndim``     normalized
==============  ==========================  ===============================  ==============

RMS norm is the one op that does not centre: its layout says ``centered=False``, and the
shared routines then take the mean as zero and the "variance" as the mean of squares.
Which layout each op uses, and everything else about it, is in :mod:`normgrad.core.table`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class NormLayout:
    """Which axes a normalization reduces, for one input shape.

    Attributes:
        op: the op's name in :data:`normgrad.core.table.OPS` (``"batch_norm"``, ...).
        x_shape: the user's input shape.
        work_shape: the shape ``x`` is viewed as (equal to ``x_shape`` except for group norm).
        reduce_axes: axes of the view summed over for mean and variance.
        param_shape: shape of gamma and beta as the user passes them.
        param_bcast: shape gamma and beta are reshaped to so they broadcast against the view.
        centered: whether the mean is subtracted (False for RMS norm, whose statistic is the
            mean of squares around zero).
        channel_axis: for batch norm, the one axis that is not reduced and that the
            parameters vary along (statistics and parameters then share their axes, which
            the backends use for shortcuts); None for every other op.
    """

    op: str
    x_shape: tuple[int, ...]
    work_shape: tuple[int, ...]
    reduce_axes: tuple[int, ...]
    param_shape: tuple[int, ...]
    param_bcast: tuple[int, ...]
    centered: bool = True
    channel_axis: int | None = None

    @property
    def count(self) -> int:
        """M, the number of values each mean and variance is taken over."""
        return math.prod(self.work_shape[a] for a in self.reduce_axes)

    @property
    def stats_shape(self) -> tuple[int, ...]:
        """Shape of mean/var with keepdims: the view's shape with reduced axes set to 1."""
        return tuple(1 if a in self.reduce_axes else n for a, n in enumerate(self.work_shape))

    @property
    def param_sum_axes(self) -> tuple[int, ...]:
        """Axes summed to turn a per-element gradient into dgamma/dbeta."""
        return tuple(a for a, n in enumerate(self.param_bcast) if n == 1)


def batch_norm_layout(x_shape: tuple[int, ...], channel_axis: int) -> NormLayout:
    """Batch norm: statistics per channel over every other axis (N and any spatial axes)."""
    ndim = len(x_shape)
    c = x_shape[channel_axis]
    bcast = tuple(c if a == channel_axis else 1 for a in range(ndim))
    reduce_axes = tuple(a for a in range(ndim) if a != channel_axis)
    return NormLayout(
        "batch_norm", x_shape, x_shape, reduce_axes, (c,), bcast, channel_axis=channel_axis
    )


def layer_norm_layout(x_shape: tuple[int, ...], normalized_ndim: int) -> NormLayout:
    """Layer norm: statistics per leading index over the last ``normalized_ndim`` axes."""
    ndim = len(x_shape)
    first = ndim - normalized_ndim
    normalized = x_shape[first:]
    bcast = (1,) * first + normalized
    return NormLayout("layer_norm", x_shape, x_shape, tuple(range(first, ndim)), normalized, bcast)


def group_norm_layout(x_shape: tuple[int, ...], num_groups: int) -> NormLayout:
    """Group norm: (N, C, *S) viewed as (N, G, C/G, *S); statistics per (sample, group)."""
    n, c, *spatial = x_shape
    work = (n, num_groups, c // num_groups, *spatial)
    reduce_axes = tuple(range(2, len(work)))
    bcast = (1, num_groups, c // num_groups) + (1,) * len(spatial)
    return NormLayout("group_norm", x_shape, work, reduce_axes, (c,), bcast)


def instance_norm_layout(x_shape: tuple[int, ...]) -> NormLayout:
    """Instance norm: statistics per (sample, channel) over the spatial axes."""
    _n, c, *spatial = x_shape
    bcast = (1, c) + (1,) * len(spatial)
    reduce_axes = tuple(range(2, len(x_shape)))
    return NormLayout("instance_norm", x_shape, x_shape, reduce_axes, (c,), bcast)


def rms_norm_layout(x_shape: tuple[int, ...], normalized_ndim: int) -> NormLayout:
    """RMS norm: layer norm's axes, without centring (root mean square around zero)."""
    ln = layer_norm_layout(x_shape, normalized_ndim)
    return NormLayout(
        "rms_norm", ln.x_shape, ln.work_shape, ln.reduce_axes, ln.param_shape, ln.param_bcast,
        centered=False,
    )  # fmt: skip

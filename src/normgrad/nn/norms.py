"""The normalization layers: one forward and one backward for all, each layer a description.

As in Flax's normalization module, a layer only says what it is: which op of the table
(:data:`normgrad.core.table.OPS`) it runs, that op's axis option, and the shape of its
parameters. :class:`_Norm` does the rest for every layer: it checks the input against the
layer, runs ``op.forward`` with gamma and beta, and in ``backward`` runs
``op.backward(dout, cache)`` on the cache that forward made and stores dgamma/dbeta.

===============  ====================  ==================  ============  ===============
layer            op                    x                   parameters    running stats
===============  ====================  ==================  ============  ===============
BatchNorm        batch_norm            any, channel axis   gamma, beta   yes
InstanceNorm     instance_norm         (N, C, *spatial)    gamma, beta   optional
GroupNorm        group_norm            (N, C, *spatial)    gamma, beta   no
LayerNorm        layer_norm            (..., *normalized)  gamma, beta   no
RMSNorm          rms_norm              (..., *normalized)  gamma         no
===============  ====================  ==================  ============  ===============

Running statistics follow PyTorch's momentum convention: ``running = (1 - momentum) *
running + momentum * batch`` (momentum weights the *new* batch; CS231n's ``momentum=0.9``
is ``0.1`` here), the running variance is the unbiased one, and ``momentum=None`` keeps a
cumulative average over the batches counted in ``num_batches_tracked``. A layer changes
its running statistics only after the op has accepted the input, so a refused batch
leaves every buffer as it was. An empty batch gives an empty output and is not counted;
a batch with NaN/Inf statistics leaves the running statistics as they were, is not
counted, and warns (``skip_nonfinite=False``: PyTorch's behaviour, which updates them).
"""

from __future__ import annotations

import numbers

import numpy as np

from normgrad.core import validate
from normgrad.core.cache import NormCache
from normgrad.core.ops import forward_updating, update_running_stats
from normgrad.core.table import (
    BATCH_NORM,
    GROUP_NORM,
    INSTANCE_NORM,
    LAYER_NORM,
    RMS_NORM,
    OpSpec,
)
from normgrad.nn import batch_norm_2d
from normgrad.nn.module import Module

#: The dtypes of BatchNorm's small 2-D training step (float16 goes through the op).
_SMALL_STEP_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _normalized_shape(value: object) -> tuple[int, ...]:
    """An int or a sequence of positive ints, as a tuple (PyTorch's ``normalized_shape``)."""
    shape = (value,) if isinstance(value, numbers.Integral) else tuple(value)
    if not shape:
        raise ValueError("normalized_shape must name at least one dimension; got ()")
    return tuple(validate.check_positive_int("normalized_shape", n) for n in shape)


def _momentum(momentum: object) -> float | None:
    return None if momentum is None else validate.check_momentum(momentum)


class _Norm(Module):
    """What every normalization layer shares: parameters, the forward call and the backward.

    A subclass sets ``op`` (an entry of the table of ops), passes the parameter shape and
    which parameters it has, and describes itself with ``_option`` (the op's axis keyword)
    and ``_mismatch`` (what to say when x does not fit the layer). Layers with running
    statistics override ``_normalize``.

    Parameters: ``gamma`` (scale, initialised to 1) and ``beta`` (shift, initialised to 0),
    both of ``param_shape``, when the layer has them; their gradients land in ``grads``.
    """

    op: OpSpec

    def __init__(
        self, param_shape: tuple[int, ...], *, scale: bool, shift: bool, eps, dtype
    ) -> None:
        super().__init__()
        self.param_shape = tuple(param_shape)
        self.eps = None if eps is None else validate.check_eps(eps)
        self.dtype = np.dtype(dtype)
        if scale:
            self.params["gamma"] = np.ones(self.param_shape, self.dtype)
        if shift:
            self.params["beta"] = np.zeros(self.param_shape, self.dtype)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    # -- what a subclass describes -------------------------------------------
    def _option(self) -> dict:
        """The op's axis keyword and its value (``{"num_groups": 2}``), or ``{}``."""
        return {}

    def _mismatch(self, x_shape: tuple[int, ...], got: tuple[int, ...]) -> str:
        """The message when x of ``x_shape`` gives parameters of shape ``got``."""
        raise NotImplementedError

    # -- the passes ------------------------------------------------------------
    def _check_input(self, x: np.ndarray) -> None:
        """x must be a valid input of the op and give this layer's parameter shape (checked
        even without parameters, so a layer never normalizes over the wrong axes)."""
        option = self._option().get(self.op.option) if self.op.option else None
        got = self.op.make_layout(x.shape, self.op.check_input(x, option)).param_shape
        if got != self.param_shape:
            raise ValueError(self._mismatch(x.shape, got))

    def _normalize(self, x, gamma, beta) -> tuple[OpSpec, np.ndarray, NormCache]:
        """``(op that ran, y, cache)``: the op, with the layer's eps and option."""
        y, cache = self.op.forward(x, gamma, beta, eps=self.eps, **self._option())
        return self.op, y, cache

    def forward(self, x):
        """Normalize x (shapes in the class docstring); y has x's shape and dtype."""
        x = validate.as_float_array("x", x)
        self._check_input(x)
        op, y, cache = self._normalize(x, self.params.get("gamma"), self.params.get("beta"))
        self._op_cache = (op, cache)
        return y

    def backward(self, dout):
        """dx for ``dout`` (y's shape); dgamma and dbeta go to ``grads``."""
        # The op that made the cache differentiates it: that is this layer's op, except for
        # instance norm in eval mode with running statistics (batch norm's eval pass).
        op, cache = self._saved("_op_cache")
        dx, dgamma, dbeta = op.backward(dout, cache)
        for name, grad in (("gamma", dgamma), ("beta", dbeta)):
            if name in self.grads:
                self.grads[name][...] = grad
        return dx

    def reset_parameters(self) -> None:
        """gamma back to 1 and beta to 0, in place (layers with running statistics also
        reset those)."""
        if "gamma" in self.params:
            self.params["gamma"][...] = 1
        if "beta" in self.params:
            self.params["beta"][...] = 0


class _RunningStatsNorm(_Norm):
    """A per-channel normalization that may keep running statistics (batch, instance norm).

    Buffers (when built with ``track_running_stats=True``): ``running_mean`` (zeros) and
    ``running_var`` (ones), ``(num_features,)`` in the layer's dtype, and
    ``num_batches_tracked`` (int64 scalar), PyTorch's names. Momentum convention:
    ``running = (1 - momentum) * running + momentum * batch``; None: cumulative average.
    """

    def __init__(
        self, num_features, *, eps, momentum, affine, track_running_stats, dtype, skip_nonfinite,
        bias=True,
    ):  # fmt: skip
        num_features = validate.check_positive_int("num_features", num_features)
        shift = affine and bias  # PyTorch's bias=False: a scale without a shift
        super().__init__((num_features,), scale=affine, shift=shift, eps=eps, dtype=dtype)
        self.num_features, self.affine, self.bias = num_features, bool(affine), bool(bias)
        self.momentum = _momentum(momentum)
        # Beyond PyTorch: a NaN/Inf batch does not poison the running statistics.
        self.skip_nonfinite = bool(skip_nonfinite)
        self._track_running_stats = bool(track_running_stats)
        self._frozen = False
        if track_running_stats:
            self._buffers = {
                "running_mean": np.zeros(num_features, self.dtype),
                "running_var": np.ones(num_features, self.dtype),
                "num_batches_tracked": np.zeros((), dtype=np.int64),
            }

    # -- switches ----------------------------------------------------------------
    @property
    def track_running_stats(self) -> bool:
        """Whether training updates the running statistics (PyTorch's flag).

        Set at construction; setting it to False later keeps PyTorch's meaning: training
        then normalizes with batch statistics without updating the running ones, while
        eval mode still uses the running statistics the layer has.
        """
        return self._track_running_stats

    @track_running_stats.setter
    def track_running_stats(self, value: bool) -> None:
        if value and not self._buffers:
            raise ValueError(
                f"{type(self).__name__} was built with track_running_stats=False and has no "
                "running statistics to track; build it with track_running_stats=True"
            )
        self._track_running_stats = bool(value)

    @property
    def running_stats_frozen(self) -> bool:
        """True between :meth:`freeze_running_stats` and :meth:`unfreeze_running_stats`."""
        return self._frozen

    def freeze_running_stats(self) -> _RunningStatsNorm:
        """Normalize with the running statistics in training too, and stop updating them.

        The "frozen batch norm" of fine-tuning: the layer behaves as in eval mode (mean
        and variance are constants, so dx is the affine-only gradient) while gamma and
        beta still get their gradients and train. Unlike calling ``eval()`` on the layer,
        freezing survives ``model.train()``. Returns the layer.
        """
        if not self._buffers:
            raise ValueError(
                f"{type(self).__name__} was built with track_running_stats=False: it has no "
                "running statistics to freeze"
            )
        self._frozen = True
        return self

    def unfreeze_running_stats(self) -> _RunningStatsNorm:
        """Back to batch statistics in training, updating the running ones. Returns the layer."""
        self._frozen = False
        return self

    def reset_running_stats(self) -> None:
        """running_mean to 0, running_var to 1, num_batches_tracked to 0, in place."""
        if self._buffers:
            self._buffers["running_mean"][...] = 0
            self._buffers["running_var"][...] = 1
            self._buffers["num_batches_tracked"][...] = 0

    def reset_parameters(self) -> None:
        """:meth:`reset_running_stats`, then gamma to 1 and beta to 0 (as PyTorch)."""
        self.reset_running_stats()
        super().reset_parameters()

    # -- which statistics ------------------------------------------------------------
    def _uses_running_stats(self) -> bool:
        """Eval mode, or frozen, normalizes with the running statistics, if the layer has
        them (PyTorch: a layer without them uses the batch's in eval mode too)."""
        return bool(self._buffers) and (not self.training or self._frozen)

    def _updates_running_stats(self) -> bool:
        return self.training and self._track_running_stats and not self._frozen

    def _batch_weight(self) -> float:
        """The new batch's weight in the running update: ``momentum``, or ``1 / n`` for the
        cumulative average when this is the n-th batch counted."""
        if self.momentum is not None:
            return self.momentum
        return 1.0 / (int(self._buffers["num_batches_tracked"]) + 1)

    def _running(self) -> dict:
        return {k: self._buffers[k] for k in ("running_mean", "running_var")}

    def _mismatch(self, x_shape, got):
        return (
            f"{type(self).__name__}(num_features={self.num_features}) got x of shape "
            f"{x_shape}, which has {got[0]} channels ({self._channel_axis_words()})"
        )

    def _channel_axis_words(self) -> str:
        return "x.shape[1]"

    def _describe(self) -> str:
        text = (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )
        return text if self.bias else f"{text}, bias=False"


class BatchNorm(_RunningStatsNorm):
    """Batch norm over every axis but ``channel_axis`` (PyTorch's BatchNorm1d/2d/3d).

    x is ``(N, C)``, ``(N, C, L)``, ``(N, C, H, W)``, ... with ``C = num_features`` on
    ``channel_axis`` (default 1; -1 for channels-last); gamma, beta and the running
    statistics are ``(C,)`` (``bias=False``: gamma without beta, as PyTorch).

    Running statistics follow PyTorch: ``running = (1 - momentum) * running + momentum *
    batch`` (``momentum``, default 0.1, weights the *new* batch), with the unbiased batch
    variance; ``momentum=None`` keeps a cumulative average over the batches seen
    (``num_batches_tracked``). A batch the op refuses is not counted. In eval mode the
    layer normalizes with the running statistics; ``track_running_stats=False`` builds no
    running statistics, and batch statistics are used in eval mode too.

    Frozen batch norm (fine-tuning): :meth:`freeze_running_stats` makes training
    normalize with the running statistics, as eval mode does, and stops updating them,
    while gamma and beta keep training; it lasts until :meth:`unfreeze_running_stats`,
    whatever ``train()``/``eval()`` calls come in between. (This is what PyTorch users get
    from ``bn.eval()`` inside a model in training, without the pitfall that
    ``model.train()`` undoes it.) :meth:`reset_running_stats` and :meth:`reset_parameters`
    are PyTorch's.

    ``comm`` (an mpi4py communicator) synchronizes the training statistics across ranks.
    """

    op = BATCH_NORM

    def __init__(
        self,
        num_features: int,
        *,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        channel_axis: int = 1,
        dtype=np.float64,
        comm=None,
        skip_nonfinite: bool = True,
        bias: bool = True,
    ):
        super().__init__(
            num_features, eps=eps, momentum=momentum, affine=affine,
            track_running_stats=track_running_stats, dtype=dtype, skip_nonfinite=skip_nonfinite,
            bias=bias,
        )  # fmt: skip
        self.channel_axis = channel_axis
        self.comm = comm  # an mpi4py communicator: synchronized batch norm in training

    def _option(self):
        return {"channel_axis": self.channel_axis}

    def _channel_axis_words(self):
        return f"x.shape[{self.channel_axis}], channel_axis={self.channel_axis}"

    # -- the small 2-D training step (normgrad.nn.batch_norm_2d) -------------------------
    def _is_small_training_step(self, x) -> bool:
        """A training step on ``(N, C)`` of the layer's dtype with batch statistics, no
        communicator: the case of a fully connected net, where the generic op's checks and
        cache cost as much as the arithmetic. Same operations, same bits."""
        return (
            type(x) is np.ndarray
            and x.ndim == 2
            and x.dtype == self.dtype
            and self.dtype in _SMALL_STEP_DTYPES
            and x.shape[0] >= 2
            and x.shape[1] == self.num_features
            and self.channel_axis in (1, -1)
            and self.eps is not None
            and self.comm is None
            and self.training
            and not self._frozen
        )

    def forward(self, x):
        """Normalize x (shapes in the class docstring); y has x's shape and dtype."""
        if not self._is_small_training_step(x):
            return super().forward(x)
        update = self._updates_running_stats()
        running = (self._buffers["running_mean"], self._buffers["running_var"]) if update else None
        weight = self._batch_weight() if update else 0.0
        kept = tuple(r.copy() for r in running) if update and self.skip_nonfinite else None
        y, saved = batch_norm_2d.forward(
            x, self.params.get("gamma"), self.params.get("beta"), self.eps, running, weight
        )
        if kept is not None and not all(np.all(np.isfinite(r)) for r in running):
            # A NaN/Inf batch (or an overflowing update): put the running statistics back
            # and let the generic op say why and skip the update, as for every other input.
            for r, before in zip(running, kept, strict=True):
                r[...] = before
            return super().forward(x)
        if update:
            self._buffers["num_batches_tracked"] += 1
        self._op_cache = (None, saved)  # None: made by batch_norm_2d, not by the op
        return y

    def backward(self, dout):
        """dx for ``dout`` (y's shape); dgamma and dbeta go to ``grads``."""
        op, saved = self._saved("_op_cache")
        if op is not None:
            return super().backward(dout)
        dout = np.asarray(dout, dtype=self.dtype)
        if dout.shape != saved.xhat.shape:
            raise ValueError(
                f"dout must have the shape of the forward output, {saved.xhat.shape}; got "
                f"{dout.shape}"
            )
        dx, dgamma, dbeta = batch_norm_2d.backward(dout, saved, self.dtype)
        for name, grad in (("gamma", dgamma), ("beta", dbeta)):
            if name in self.grads:
                self.grads[name][...] = grad
        return dx

    def last_batch_statistics(self) -> tuple[np.ndarray, np.ndarray, int]:
        """``(mean, var, m)`` of the batch the last training forward normalized with: the
        per-channel mean and *biased* variance, float64 ``(C,)``, and the values per
        channel ``m`` (over every rank when synchronized). What Algorithm 2 of the paper
        averages (:mod:`normgrad.nn.population`). RuntimeError when the last forward used
        the running statistics."""
        op, cache = self._saved("_op_cache")
        if op is None:
            return cache.mean.reshape(-1), cache.var.reshape(-1), cache.xhat.shape[0]
        if not cache.training:
            raise RuntimeError(
                "the last forward normalized with the running statistics (eval mode or "
                "frozen): there are no batch statistics to report"
            )
        return cache.mean.reshape(-1), cache.var.reshape(-1), cache.count

    def _normalize(self, x, gamma, beta):
        options = {"eps": self.eps, **self._option()}
        if self._uses_running_stats():
            y, cache = self.op.forward(x, gamma, beta, training=False, **self._running(), **options)
            return self.op, y, cache
        if self.training and self.comm is not None:
            options["comm"] = self.comm
        if self._updates_running_stats():
            options |= {
                **self._running(), "momentum": self._batch_weight(),
                "skip_nonfinite": self.skip_nonfinite,
            }  # fmt: skip
        # The op validates everything before it writes the running statistics; the batch
        # is counted only if the op updated them (not for an empty or a skipped batch).
        y, cache, updated = forward_updating(self.op, x, gamma, beta, **options)
        if updated:
            self._buffers["num_batches_tracked"] += 1
        return self.op, y, cache

    def extra_repr(self) -> str:
        text = self._describe()
        return text if self.channel_axis == 1 else f"{text}, channel_axis={self.channel_axis}"


class InstanceNorm(_RunningStatsNorm):
    """Instance norm: each (sample, channel) of ``(N, C, *spatial)`` normalized over its
    spatial axes (PyTorch's InstanceNorm1d/2d/3d, batched input); gamma, beta ``(C,)``.

    ``x.shape[1]`` must be ``num_features`` (a ValueError; PyTorch only warns when the
    layer has no affine parameters), and x must have a batch axis (PyTorch also takes an
    unbatched ``(C, *spatial)``). Defaults as PyTorch's: no affine parameters and no
    running statistics. With
    ``track_running_stats=True``, training normalizes each instance with its own
    statistics and updates ``running_mean``/``running_var`` ``(C,)`` with the per-channel
    averages over the batch of the per-instance mean and *unbiased* variance, in
    PyTorch's momentum convention ``running = (1 - momentum) * running + momentum *
    batch`` (momentum weights the new batch); eval mode then normalizes every instance
    with the running statistics. ``momentum=None`` keeps a cumulative average over the
    batches counted in ``num_batches_tracked`` (as :class:`BatchNorm`; PyTorch's
    InstanceNorm treats None as 0 and never counts). :meth:`freeze_running_stats`,
    :meth:`reset_running_stats` and :meth:`reset_parameters` are as for BatchNorm.
    """

    op = INSTANCE_NORM

    def __init__(
        self,
        num_features: int,
        *,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        dtype=np.float64,
        skip_nonfinite: bool = True,
        bias: bool = True,
    ):
        super().__init__(
            num_features, eps=eps, momentum=momentum, affine=affine,
            track_running_stats=track_running_stats, dtype=dtype, skip_nonfinite=skip_nonfinite,
            bias=bias,
        )  # fmt: skip

    def _normalize(self, x, gamma, beta):
        if self._uses_running_stats():
            # Every instance normalized with its channel's running mean and variance is
            # exactly batch norm's eval pass over channel axis 1 (backward included).
            y, cache = BATCH_NORM.forward(
                x, gamma, beta, training=False, eps=self.eps, channel_axis=1, **self._running()
            )
            return BATCH_NORM, y, cache
        y, cache = self.op.forward(x, gamma, beta, eps=self.eps)
        if self._updates_running_stats() and x.size:  # an empty batch has no statistics
            self._update_running_stats(cache)
        return self.op, y, cache

    def _update_running_stats(self, cache: NormCache) -> None:
        """Fold the batch's per-instance statistics (cache.mean, cache.var: ``(N, C, 1,
        ...)``, the biased variance over M spatial values) into the running ones."""
        n, c = cache.layout.x_shape[:2]
        m = cache.count
        batch_mean = cache.mean.reshape(n, c).mean(axis=0)
        batch_var = (cache.var.reshape(n, c) * (m / (m - 1))).mean(axis=0)  # unbiased
        running = self._running()
        if update_running_stats(
            running["running_mean"], running["running_var"], batch_mean, batch_var,
            self._batch_weight(), skip_nonfinite=self.skip_nonfinite,
        ):  # fmt: skip
            self._buffers["num_batches_tracked"] += 1

    def extra_repr(self) -> str:
        return self._describe()


class GroupNorm(_Norm):
    """Group norm of ``(N, C, *spatial)``, ``C = num_channels``: the channels split into
    ``num_groups`` consecutive groups, statistics per (sample, group), per-channel affine
    gamma and beta ``(C,)`` (``affine=False``: none; ``bias=False``: gamma only, as
    PyTorch). No running statistics."""

    op = GROUP_NORM

    def __init__(
        self, num_groups, num_channels, *, eps=1e-5, affine=True, bias=True, dtype=np.float64
    ):
        num_groups = validate.check_positive_int("num_groups", num_groups)
        num_channels = validate.check_positive_int("num_channels", num_channels)
        if num_channels % num_groups:
            raise ValueError(f"num_groups={num_groups} must divide num_channels={num_channels}")
        super().__init__((num_channels,), scale=affine, shift=affine and bias, eps=eps, dtype=dtype)
        self.num_groups, self.num_channels, self.affine = num_groups, num_channels, bool(affine)
        self.bias = bool(bias)

    def _option(self):
        return {"num_groups": self.num_groups}

    def _mismatch(self, x_shape, got):
        return (
            f"GroupNorm(num_channels={self.num_channels}) got x of shape {x_shape}, which "
            f"has {got[0]} channels (x.shape[1])"
        )

    def extra_repr(self) -> str:
        text = f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"
        return text if self.bias else f"{text}, bias=False"


class _TrailingNorm(_Norm):
    """A normalization over the last ``len(normalized_shape)`` axes of x (layer, RMS)."""

    def _option(self):
        return {"normalized_ndim": len(self.normalized_shape)}

    def _mismatch(self, x_shape, got):
        return (
            f"{type(self).__name__}(normalized_shape={self.normalized_shape}) normalizes "
            f"x of shape (..., {', '.join(map(str, self.normalized_shape))}); got x of "
            f"shape {x_shape}, which ends in {got}"
        )


class LayerNorm(_TrailingNorm):
    """Layer norm over the last ``len(normalized_shape)`` axes (PyTorch's LayerNorm).

    x is ``(..., *normalized_shape)``; a different trailing shape is a ValueError. With
    ``elementwise_affine=True`` the layer has gamma (and, unless ``bias=False``, beta) of
    ``normalized_shape``. No running statistics: training and eval are the same.
    """

    op = LAYER_NORM

    def __init__(
        self,
        normalized_shape,
        *,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        dtype=np.float64,
    ):
        self.normalized_shape = _normalized_shape(normalized_shape)
        self.elementwise_affine, self.bias = bool(elementwise_affine), bool(bias)
        super().__init__(
            self.normalized_shape, scale=self.elementwise_affine,
            shift=self.elementwise_affine and self.bias, eps=eps, dtype=dtype,
        )  # fmt: skip

    def extra_repr(self) -> str:
        text = (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        )
        return text if self.bias else f"{text}, bias=False"


class RMSNorm(_TrailingNorm):
    """RMS norm over the last ``len(normalized_shape)`` axes (PyTorch's RMSNorm):
    ``y = gamma * x / sqrt(mean(x^2) + eps)``, nothing subtracted, no shift.

    x is ``(..., *normalized_shape)``; gamma (with ``elementwise_affine=True``) has
    ``normalized_shape``. ``eps=None`` (default) is the machine epsilon of x's dtype, as
    PyTorch. No running statistics.
    """

    op = RMS_NORM

    def __init__(
        self,
        normalized_shape,
        *,
        eps: float | None = None,
        elementwise_affine: bool = True,
        dtype=np.float64,
    ):
        self.normalized_shape = _normalized_shape(normalized_shape)
        self.elementwise_affine = bool(elementwise_affine)
        super().__init__(
            self.normalized_shape, scale=self.elementwise_affine, shift=False, eps=eps,
            dtype=dtype,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        )

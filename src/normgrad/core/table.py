"""The one table of ops: each normalization described once, read by everything else.

An :class:`OpSpec` says what an op *is*: which axes it reduces (its layout), the one option
that picks those axes, whether it centres, whether it has a shift (beta) and running
statistics, how it names its groups in messages, its staged graph, and a small example
shape. It holds no arithmetic: the functional API (:mod:`normgrad.core.ops`), the staged
backward, the autodiff engine, ``explain``, ``graph``, the grader, ``nn``, the fused
kernels, ``bench``, ``verify`` and the command line all read this table, so adding an op
is one entry here (see ``docs/design.md`` for the math each entry stands for).

Every consumer calls an op the same way, whatever its signature::

    spec = get_op("group_norm")                  # or an alias: "group", "groupnorm", "gn"
    y, cache = spec.forward(x, gamma, beta, num_groups=2)
    dx, dgamma, dbeta = spec.backward(dy, cache)  # dbeta is None for ops without a shift

The public functions (``normgrad.group_norm_forward`` and so on) keep the familiar,
op-specific signatures of ``torch.nn.functional`` and the course.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from normgrad.core.layout import (
    NormLayout,
    batch_norm_layout,
    group_norm_layout,
    instance_norm_layout,
    layer_norm_layout,
    rms_norm_layout,
)

# --------------------------------------------------------------------------- the staged graph


@dataclass(frozen=True)
class Node:
    """One node of the staged forward graph (the computational-graph walk, docs/sources.md).

    Attributes:
        step: its number in the walk, 1 (the mean) to 9 (the shift); the backward visits the
            nodes from the highest number down to step 0, the input.
        name: the value it computes (``"xmu"``); autodiff tags its node with this name.
        expr: the computation, e.g. ``"xmu = x - mu"``.
        what: a few words on why it is there.
        rule: the local derivative applied on the way back, in symbols.
    """

    step: int
    name: str
    expr: str
    what: str
    rule: str


_CENTERED_NODES = (
    Node(1, "mu", "mu = mean(x)", "the mean of each group", "1/M each"),
    Node(2, "xmu", "xmu = x - mu", "centre x", "d(a-b)/da = 1, d(a-b)/db = -1"),
    Node(3, "sq", "sq = xmu ** 2", "square", "d(a^2)/da = 2a"),
    Node(4, "var", "var = sum(sq) / M", "the variance of each group", "1/M each"),
    Node(5, "sqrtvar", "sqrtvar = sqrt(var + eps)", "eps keeps the root away from zero",
         "d sqrt(a)/da = 1/(2 sqrt(a))"),
    Node(6, "ivar", "ivar = 1 / sqrtvar", "invert", "d(1/a)/da = -1/a^2"),
    Node(7, "xhat", "xhat = xmu * ivar", "normalize", "d(ab)/da = b"),
    Node(8, "gammax", "gammax = gamma * xhat", "scale", "d(ab)/da = b"),
    Node(9, "out", "out = gammax + beta", "shift", "d(a+b)/da = 1, d(a+b)/db = 1"),
)  # fmt: skip

# RMS norm does not centre: x itself plays xmu's part, and its "variance" is the mean of
# squares. Without steps 1 and 2, the two paths into x meet at x directly.
_UNCENTERED_NODES = (
    Node(3, "sq", "sq = x ** 2", "square", "d(a^2)/da = 2a"),
    Node(4, "var", "var = sum(sq) / M", "the mean square of each group", "1/M each"),
    Node(5, "sqrtvar", "sqrtvar = sqrt(var + eps)", "the root mean square, kept from zero",
         "d sqrt(a)/da = 1/(2 sqrt(a))"),
    Node(6, "ivar", "ivar = 1 / sqrtvar", "invert", "d(1/a)/da = -1/a^2"),
    Node(7, "xhat", "xhat = x * ivar", "normalize", "d(ab)/da = b"),
    Node(8, "out", "out = gamma * xhat", "scale", "d(ab)/da = b"),
)  # fmt: skip


def graph_nodes(centered: bool, has_beta: bool, bessel: bool = False) -> tuple[Node, ...]:
    """The staged graph's nodes for an op of this kind, step 1 (or 3) to the last."""
    nodes = _CENTERED_NODES if centered else _UNCENTERED_NODES
    if centered and not has_beta:
        nodes = nodes[:-1]
    if bessel:
        nodes = tuple(
            Node(n.step, n.name, "var = sum(sq) / (M - 1)", n.what, "1/(M-1) each")
            if n.step == 4
            else n
            for n in nodes
        )
    return nodes


# --------------------------------------------------------------------------- an op


@dataclass(frozen=True)
class OpSpec:
    """Everything that makes one normalization what it is.

    Attributes:
        name: the op's one name (``"batch_norm"``), used in every API, message and file.
        title: for people (``"Batch norm"``).
        aliases: other spellings accepted where users type a name (``"batch"``, the
            course's ``"batchnorm"``); never printed.
        groups: how the statistics are grouped, in words (``"per channel"``).
        option: the keyword that chooses the reduced axes (``"channel_axis"``,
            ``"normalized_ndim"``, ``"num_groups"``) or None.
        option_default: its default (None: the caller must give it).
        make_layout: ``(x_shape, option value) -> NormLayout``, for a validated input.
        check_input: ``(x, option value) -> option value``: validates x's rank and the
            option against x, raising ValueError/TypeError that name the argument.
        centered: subtracts the mean (False: RMS norm).
        has_beta: has a shift parameter.
        running_stats: keeps running statistics and has an eval mode (batch norm).
        min_values: values per group needed in training (2 where a batch variance of one
            value would be meaningless and PyTorch refuses it, else 1).
        bessel_allowed: accepts ``bessel=True``.
        default_eps: the eps used when none is given; None means the machine epsilon of
            x's dtype (``torch.nn.functional.rms_norm``'s default).
        param_words: what gamma and beta hold, for messages.
        example_shape: a small input shape that reads well in ``explain`` and ``graph``.
        torch_name: the ``torch.nn.functional`` function it is checked against.
    """

    name: str
    title: str
    aliases: tuple[str, ...]
    groups: str
    option: str | None
    option_default: int | None
    make_layout: Callable[[tuple[int, ...], int | None], NormLayout]
    check_input: Callable[[np.ndarray, object], int | None]
    centered: bool
    has_beta: bool
    running_stats: bool
    min_values: int
    bessel_allowed: bool
    default_eps: float | None
    param_words: str
    example_shape: tuple[int, ...]
    torch_name: str

    # -- description ----------------------------------------------------------------
    def layout(self, x_shape: tuple[int, ...], **options) -> NormLayout:
        """The layout of an input of ``x_shape`` (options as for :meth:`forward`)."""
        x = np.empty(x_shape)
        return self.make_layout(tuple(x_shape), self.check_input(x, self._option(options)))

    def param_shape(self, x_shape: tuple[int, ...], **options) -> tuple[int, ...]:
        """Shape of gamma (and beta) for an input of ``x_shape``."""
        return self.layout(x_shape, **options).param_shape

    def nodes(self, bessel: bool = False) -> tuple[Node, ...]:
        """The staged graph's nodes, in forward order."""
        return graph_nodes(self.centered, self.has_beta, bessel)

    def _option(self, options: dict) -> object:
        if self.option is None:
            return None
        return options.get(self.option, self.option_default)

    # -- uniform calls ----------------------------------------------------------------
    # The functional layer sits above this table (it reads it), so it is imported here
    # on use rather than at the top of the module.
    def forward(self, x, gamma=None, beta=None, **kwargs):
        """``(y, cache)`` for any op. ``beta`` must be None for an op without a shift;
        ``kwargs`` are the op's keywords: its option, ``eps``, ``bessel``, ``backend``, and
        for batch norm ``training``, ``running_mean``, ``running_var``, ``momentum``, ``comm``."""
        from normgrad.core import ops

        return ops.forward(self, x, gamma, beta, **kwargs)

    def backward(self, dy, cache):
        """``(dx, dgamma, dbeta)`` in closed form; dbeta is None for an op without a shift."""
        from normgrad.core import ops

        return ops.backward(self, dy, cache)

    def double_backward(self, dy, cache, ddx=None, ddgamma=None, ddbeta=None):
        """``(grad_x, grad_gamma, grad_dy)`` of ``<ddx, dx> + <ddgamma, dgamma> + <ddbeta,
        dbeta>``: the second derivatives in closed form (:mod:`normgrad.core.double_backward`)."""
        from normgrad.core.double_backward import double_backward

        return double_backward(dy, cache, ddx, ddgamma, ddbeta, op=self.name)

    def backward_staged(self, dy, cache, *, return_steps: bool = False):
        """``(dx, dgamma, dbeta[, steps])`` through the staged graph."""
        from normgrad.core.staged import staged_backward

        return staged_backward(dy, cache, return_steps=return_steps, op=self.name)


# --------------------------------------------------------------------------- input checks
# Each op's own constraints on x and its axis option; the shared checks (dtypes, gamma,
# eps, ...) are in normgrad.core.validate.


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _need_ndim(x: np.ndarray, min_ndim: int, expected: str) -> None:
    if x.ndim < min_ndim:
        raise ValueError(f"x must have shape {expected}; got shape {x.shape}")


def _check_batch(x: np.ndarray, channel_axis: object) -> int:
    _need_ndim(x, 2, "(N, C, ...) with at least 2 dimensions")
    if not _is_int(channel_axis):
        raise TypeError(f"channel_axis must be an int; got {channel_axis!r}")
    if not -x.ndim <= channel_axis < x.ndim:
        raise ValueError(
            f"channel_axis={channel_axis} is out of range for an input of shape {x.shape} "
            f"(expected an axis in [{-x.ndim}, {x.ndim - 1}])"
        )
    return int(channel_axis) % x.ndim


def _positive(name: str, value: object) -> int:
    if not _is_int(value):
        raise TypeError(f"{name} must be a positive int; got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int; got {value}")
    return int(value)


def _check_trailing(x: np.ndarray, normalized_ndim: object) -> int:
    k = _positive("normalized_ndim", normalized_ndim)
    _need_ndim(x, k, f"(..., *normalized) with at least normalized_ndim={k} dims")
    return k


def _check_groups(x: np.ndarray, num_groups: object) -> int:
    _need_ndim(x, 2, "(N, C, *spatial) with at least 2 dimensions")
    if num_groups is None:
        raise TypeError("group_norm needs num_groups, a positive divisor of C")
    g = _positive("num_groups", num_groups)
    c = x.shape[1]
    if c % g:
        raise ValueError(
            f"num_groups={g} must divide the number of channels C={c} (x.shape[1], "
            f"x of shape {x.shape})"
        )
    return g


def _check_instance(x: np.ndarray, _option: object) -> None:
    _need_ndim(x, 3, "(N, C, *spatial) with at least one spatial dimension")


# --------------------------------------------------------------------------- the table

BATCH_NORM = OpSpec(
    name="batch_norm",
    title="Batch norm",
    aliases=("batch", "batchnorm", "bn", "spatial_batchnorm"),
    groups="per channel",
    option="channel_axis",
    option_default=1,
    make_layout=batch_norm_layout,
    check_input=_check_batch,
    centered=True,
    has_beta=True,
    running_stats=True,
    min_values=2,
    bessel_allowed=True,
    default_eps=1e-5,
    param_words="one value per channel",
    example_shape=(4, 3),
    torch_name="batch_norm",
)

LAYER_NORM = OpSpec(
    name="layer_norm",
    title="Layer norm",
    aliases=("layer", "layernorm", "ln"),
    groups="per sample",
    option="normalized_ndim",
    option_default=1,
    make_layout=layer_norm_layout,
    check_input=_check_trailing,
    centered=True,
    has_beta=True,
    running_stats=False,
    min_values=1,
    bessel_allowed=True,
    default_eps=1e-5,
    param_words="the normalized dims of x",
    example_shape=(3, 4),
    torch_name="layer_norm",
)

GROUP_NORM = OpSpec(
    name="group_norm",
    title="Group norm",
    aliases=("group", "groupnorm", "gn", "spatial_groupnorm"),
    groups="per (sample, group)",
    option="num_groups",
    option_default=None,
    make_layout=group_norm_layout,
    check_input=_check_groups,
    centered=True,
    has_beta=True,
    running_stats=False,
    min_values=1,
    bessel_allowed=True,
    default_eps=1e-5,
    param_words="one value per channel, x.shape[1]",
    example_shape=(2, 4, 3),
    torch_name="group_norm",
)

INSTANCE_NORM = OpSpec(
    name="instance_norm",
    title="Instance norm",
    aliases=("instance", "instancenorm", "in"),
    groups="per (sample, channel)",
    option=None,
    option_default=None,
    make_layout=lambda shape, _option: instance_norm_layout(shape),
    check_input=_check_instance,
    centered=True,
    has_beta=True,
    running_stats=False,
    min_values=2,  # PyTorch, too, refuses one spatial element per (sample, channel)
    bessel_allowed=True,
    default_eps=1e-5,
    param_words="one value per channel, x.shape[1]",
    example_shape=(2, 2, 4),
    torch_name="instance_norm",
)

RMS_NORM = OpSpec(
    name="rms_norm",
    title="RMS norm",
    aliases=("rms", "rmsnorm"),
    groups="per sample",
    option="normalized_ndim",
    option_default=1,
    make_layout=rms_norm_layout,
    check_input=_check_trailing,
    centered=False,
    has_beta=False,
    running_stats=False,
    min_values=1,
    bessel_allowed=False,
    default_eps=None,
    param_words="the normalized dims of x",
    example_shape=(3, 4),
    torch_name="rms_norm",
)

#: Every op, by its one name, in the order they are listed to users.
OPS: dict[str, OpSpec] = {
    spec.name: spec for spec in (BATCH_NORM, LAYER_NORM, GROUP_NORM, INSTANCE_NORM, RMS_NORM)
}

_BY_ALIAS = {alias: spec for spec in OPS.values() for alias in (spec.name, *spec.aliases)}


def get_op(name: object) -> OpSpec:
    """The op called ``name`` (its name or an alias); ValueError listing them otherwise."""
    if isinstance(name, OpSpec):
        return name
    spec = _BY_ALIAS.get(str(name).lower().replace("-", "_")) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"unknown op {name!r}; expected one of {', '.join(OPS)}")
    return spec

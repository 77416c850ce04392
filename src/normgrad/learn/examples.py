"""Small, seeded, readable examples of any op in the table, shared by ``explain`` and ``graph``.

Everything about an op (its name, shape defaults, axis option, whether it has a shift) is
read from the table of ops (:mod:`normgrad.core.table`); nothing here is written per op.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from normgrad import autodiff
from normgrad.core.table import OPS as _TABLE
from normgrad.core.table import OpSpec, get_op

#: The ops' names, in the table's order (the command line's ``--op`` choices).
OPS: tuple[str, ...] = tuple(_TABLE)
#: Each op's example shape, from the table (shown in the command line's help).
DEFAULT_SHAPES: dict[str, tuple[int, ...]] = {
    name: spec.example_shape for name, spec in _TABLE.items()
}

# An op whose axis option has no default (group norm's num_groups) gets the first of these
# that it accepts for the example's shape.
_EXAMPLE_OPTION_VALUES = (2, 1)


@dataclass
class Example:
    """One op on seeded inputs with one decimal (easy to read, exact to type back in).

    Attributes:
        op: the op's name in the table (``"batch_norm"``, ..., ``"rms_norm"``).
        x: the input, of the example's shape, float64.
        gamma: the scale, of the op's parameter shape.
        beta: the shift, same shape as gamma; None for an op without one (RMS norm).
        dout: the upstream gradient, x's shape.
        options: the op's axis keyword and its value (``{"num_groups": 2}``), or empty.
        bessel: normalize with the Bessel-corrected variance (M - 1).
        eps: the eps used, a number (the op's default when the example was made without one).
    """

    op: str
    x: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray | None
    dout: np.ndarray
    options: dict[str, int] = field(default_factory=dict)
    bessel: bool = False
    eps: float = 1e-5

    @property
    def spec(self) -> OpSpec:
        """The op's entry in the table."""
        return get_op(self.op)

    @property
    def inputs(self) -> dict[str, np.ndarray]:
        """The arrays that get gradients, by name: x, gamma and (where the op has it) beta."""
        named = {"x": self.x, "gamma": self.gamma, "beta": self.beta}
        return {name: a for name, a in named.items() if a is not None}

    def forward(self):
        """The functional core's ``(y, cache)``, on the NumPy backend."""
        return self.spec.forward(
            self.x, self.gamma, self.beta, eps=self.eps, bessel=self.bessel, backend="numpy",
            **self.options,
        )  # fmt: skip

    def forward_fn(self):
        """``f(x, gamma[, beta]) -> y``, keyword arguments as in :attr:`inputs`, for
        numerical gradients."""
        spec = self.spec

        def f(x, gamma, beta=None):
            return spec.forward(
                x, gamma, beta, eps=self.eps, bessel=self.bessel, backend="numpy", **self.options
            )[0]

        return f

    def autodiff(self):
        """Build the graph from primitives and run its backward with ``dout``.

        Returns ``(out, x, gamma, beta)`` as Tensors, their ``.grad`` filled; beta is None
        for an op without a shift.
        """
        tensors = {name: autodiff.Tensor(a, name=name) for name, a in self.inputs.items()}
        x, gamma, beta = tensors["x"], tensors["gamma"], tensors.get("beta")
        out = autodiff.norm(
            self.op, x, gamma, beta, eps=self.eps, bessel=self.bessel, **self.options
        )
        out.backward(self.dout)
        return out, x, gamma, beta


def _example_options(spec: OpSpec, shape: tuple[int, ...], given: dict) -> dict[str, int]:
    """The op's axis option for the example: the one given, else the table's default, else
    the first value of :data:`_EXAMPLE_OPTION_VALUES` the op accepts for ``shape``."""
    unknown = set(given) - {spec.option}
    if unknown:
        allowed = f"its option is {spec.option}" if spec.option else "it takes no axis option"
        raise ValueError(f"{spec.name} does not take {sorted(unknown)[0]}: {allowed}")
    if spec.option is None:
        return {}
    value = given.get(spec.option, spec.option_default)
    if value is None:
        for candidate in _EXAMPLE_OPTION_VALUES:
            try:
                spec.layout(shape, **{spec.option: candidate})
            except (ValueError, TypeError):
                continue
            value = candidate
            break
        else:
            value = _EXAMPLE_OPTION_VALUES[-1]  # let the forward pass say what is wrong
    return {spec.option: value}


def make_example(
    op: str,
    shape: tuple[int, ...] | None = None,
    *,
    seed: int = 0,
    num_groups: int | None = None,
    bessel: bool = False,
    eps: float | None = None,
    **options: int,
) -> Example:
    """A seeded example of ``op`` (a name or alias from the table).

    Args:
        op: the op, e.g. ``"batch_norm"`` or ``"rms"``.
        shape: x's shape; default the table's ``example_shape`` for the op.
        seed: seeds x, gamma, beta and dout.
        num_groups: group norm's option (kept as its own keyword for the command line).
        bessel: the Bessel-corrected variance; ValueError for an op without that variant.
        eps: default the op's own (``1e-5``, or for RMS norm the machine epsilon of float64).
        options: the op's axis keyword (``channel_axis``, ``normalized_ndim``).

    Raises:
        ValueError: an unknown op, a keyword the op does not take, or (from the core) an
            impossible shape.
    """
    spec = get_op(op)
    shape = tuple(shape or spec.example_shape)
    if any(n < 1 for n in shape):
        raise ValueError(f"every dimension of the shape must be positive; got {shape}")
    if num_groups is not None:
        options["num_groups"] = num_groups
    options = _example_options(spec, shape, options)
    if eps is None:  # the op's default, as a number, so the example says what it used
        eps = spec.default_eps if spec.default_eps is not None else float(np.finfo(np.float64).eps)

    def one_decimal(a):
        return np.round(a, 1) + 0.0  # + 0.0 turns -0.0 into 0.0

    rng = np.random.default_rng(seed)
    try:
        param_shape = spec.param_shape(shape, **options)
    except (ValueError, TypeError):
        param_shape = (1,)  # an impossible shape: the forward pass below says why
    x = one_decimal(rng.normal(1.0, 2.0, shape))
    gamma = one_decimal(rng.uniform(0.5, 1.5, param_shape))
    beta = one_decimal(rng.normal(0.0, 1.0, param_shape))  # drawn always: same x, dout per seed
    dout = one_decimal(rng.normal(0.0, 1.0, shape))
    ex = Example(spec.name, x, gamma, beta if spec.has_beta else None, dout, options, bessel, eps)
    ex.forward()  # validates: the core raises a clear ValueError for impossible shapes
    return ex

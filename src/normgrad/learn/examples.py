"""Small, seeded, readable examples of each op, shared by ``explain`` and ``graph``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import normgrad as ng
from normgrad import autodiff

OPS = ("batch_norm", "layer_norm", "group_norm", "instance_norm")
DEFAULT_SHAPES = {
    "batch_norm": (4, 3),
    "layer_norm": (3, 4),
    "group_norm": (2, 4, 3),
    "instance_norm": (2, 2, 4),
}


@dataclass
class Example:
    """One op on seeded inputs with one decimal (easy to read, exact to type back in)."""

    op: str
    x: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    dout: np.ndarray
    num_groups: int | None = None
    bessel: bool = False
    eps: float = 1e-5

    @property
    def _extra(self) -> tuple:
        return () if self.num_groups is None else (self.num_groups,)

    def forward(self):
        """The functional core's ``(y, cache)``."""
        fwd = getattr(ng, f"{self.op}_forward")
        return fwd(self.x, self.gamma, self.beta, *self._extra, eps=self.eps, bessel=self.bessel)

    def forward_fn(self):
        """``f(x, gamma, beta) -> y``, for numerical gradients."""
        fwd = getattr(ng, f"{self.op}_forward")

        def f(x, gamma, beta):
            return fwd(x, gamma, beta, *self._extra, eps=self.eps, bessel=self.bessel)[0]

        return f

    def autodiff(self):
        """Build the graph from primitives and run its backward with ``dout``.

        Returns ``(out, x, gamma, beta)`` as Tensors, their ``.grad`` filled.
        """
        x, gamma, beta = (autodiff.Tensor(a) for a in (self.x, self.gamma, self.beta))
        x.name, gamma.name, beta.name = "x", "gamma", "beta"
        build = getattr(autodiff, self.op)
        out = build(x, gamma, beta, *self._extra, eps=self.eps, bessel=self.bessel)
        out.backward(self.dout)
        return out, x, gamma, beta


def make_example(
    op: str,
    shape: tuple[int, ...] | None = None,
    *,
    seed: int = 0,
    num_groups: int | None = None,
    bessel: bool = False,
    eps: float = 1e-5,
) -> Example:
    """A seeded example of ``op``; raises ValueError (from the core) for impossible shapes."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; expected one of {', '.join(OPS)}")
    shape = tuple(shape or DEFAULT_SHAPES[op])
    if any(n < 1 for n in shape):
        raise ValueError(f"every dimension of the shape must be positive; got {shape}")
    if op == "group_norm" and num_groups is None:
        num_groups = 2 if len(shape) > 1 and shape[1] % 2 == 0 else 1
    rng = np.random.default_rng(seed)
    param_shape = shape[-1:] if op == "layer_norm" else shape[1:2]

    def one_decimal(a):
        return np.round(a, 1) + 0.0  # + 0.0 turns -0.0 into 0.0

    x = one_decimal(rng.normal(1.0, 2.0, shape))
    gamma = one_decimal(rng.uniform(0.5, 1.5, param_shape))
    beta = one_decimal(rng.normal(0.0, 1.0, param_shape))
    dout = one_decimal(rng.normal(0.0, 1.0, shape))
    ex = Example(op, x, gamma, beta, dout, num_groups if op == "group_norm" else None, bessel, eps)
    ex.forward()  # validates: the core raises a clear ValueError for impossible shapes
    return ex

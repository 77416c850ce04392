"""Hypothesis strategies for normalization calls: op, layout, shape, convention, memory layout.

A :class:`Call` bundles everything one forward call needs, so a test can run the forward,
both backwards, the numerical check and PyTorch on the same inputs. Every op of the table
(:data:`normgrad.core.table.OPS`) is drawn, and what a call may have comes from its entry:
a shift only where the op has one, the Bessel variant where it is allowed, eval mode where
there are running statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from normgrad.core.table import OPS, OpSpec, get_op

MAX_SIZE = 160  # numerical gradients cost two forward passes per element


@dataclass
class Call:
    """One forward call: ``get_op(op).forward(x, gamma, beta, **kwargs)``.

    ``kwargs`` holds the op's axis keyword (``channel_axis``, ``normalized_ndim``,
    ``num_groups``) and the rest of its forward keywords (``bessel``, eval mode's running
    statistics, ...).
    """

    op: str
    x: np.ndarray
    gamma: np.ndarray | None
    beta: np.ndarray | None
    kwargs: dict = field(default_factory=dict)

    @property
    def spec(self) -> OpSpec:
        return get_op(self.op)

    def forward(self, x=None, gamma=None, beta=None, **overrides):
        x = self.x if x is None else x
        gamma = self.gamma if gamma is None else gamma
        beta = self.beta if beta is None else beta
        return self.spec.forward(x, gamma, beta, **(self.kwargs | overrides))

    def backward(self, dy, cache):
        """``(dx, dgamma, dbeta)`` in closed form; dbeta is None for an op without a shift."""
        return self.spec.backward(dy, cache)

    def staged(self, dy, cache, **kw):
        return self.spec.backward_staged(dy, cache, **kw)

    def astype(self, dtype) -> Call:
        """The same call with every array (x, the parameters, running statistics) cast."""

        def cast(a):
            return a.astype(dtype) if isinstance(a, np.ndarray) else a

        kwargs = {k: cast(v) for k, v in self.kwargs.items()}
        return Call(self.op, cast(self.x), cast(self.gamma), cast(self.beta), kwargs)

    def reference_kwargs(self) -> dict:
        """Keyword arguments for normgrad.reference.pytorch.reference (PyTorch updates the
        running statistics in place, so it gets copies)."""
        return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in self.kwargs.items()}

    @property
    def count(self) -> int:
        """M, the number of values per group."""
        return self.spec.layout(self.x.shape, **self.kwargs).count


def _memory_layout(rng, shape, dtype, kind):
    """An array of ``shape`` that is contiguous, strided (every other element) or transposed."""
    if kind == "strided":
        base = rng.standard_normal((*shape[:-1], 2 * shape[-1]))
        return base[..., ::2].astype(dtype, copy=False)
    if kind == "transposed":
        return rng.standard_normal(shape[::-1]).astype(dtype).T
    return rng.standard_normal(shape).astype(dtype)


def _shape_and_option(draw, spec: OpSpec) -> tuple[tuple[int, ...], dict]:
    """An input shape the op accepts, and its axis keyword; by how the op picks its axes."""
    small = st.integers(1, 3)
    if spec.option == "channel_axis":  # any rank, the statistics per channel
        ndim = draw(st.integers(2, 5))
        shape = (draw(st.integers(2, 5)), *(draw(small) for _ in range(ndim - 1)))
        return shape, {"channel_axis": draw(st.sampled_from([1, -1, *range(ndim)]))}
    if spec.option == "normalized_ndim":  # any rank, the last k axes normalized together
        ndim = draw(st.integers(1, 4))
        shape = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
        return shape, {"normalized_ndim": draw(st.integers(1, ndim))}
    if spec.option == "num_groups":  # (N, C, *S), C a multiple of the number of groups
        num_groups = draw(small)
        spatial = tuple(draw(small) for _ in range(draw(st.integers(0, 2))))
        return (draw(small), num_groups * draw(small), *spatial), {"num_groups": num_groups}
    # no option (instance norm): (N, C, *S) with at least one spatial axis
    spatial = tuple(draw(small) for _ in range(draw(st.integers(1, 2))))
    return (draw(small), draw(small), *spatial), {}


@st.composite
def norm_calls(draw, dtype=np.float64, ops=tuple(OPS), allow_eval=True, affine=None):
    """Any op in any layout and variance convention, small enough for numerical gradients."""
    spec = get_op(draw(st.sampled_from(ops)))
    shape, kwargs = _shape_and_option(draw, spec)
    assume(math.prod(shape) <= MAX_SIZE)
    kwargs["bessel"] = draw(st.booleans()) if spec.bessel_allowed else False
    training = draw(st.booleans()) if spec.running_stats and allow_eval else True

    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["contiguous", "strided", "transposed"]))
    scale = draw(st.floats(0.5, 3.0))
    offset = draw(st.floats(-5.0, 5.0))
    x = _memory_layout(rng, shape, dtype, kind) * dtype(scale) + dtype(offset)
    param_shape = spec.param_shape(shape, **kwargs)
    use_affine = draw(st.booleans()) if affine is None else affine
    gamma = (rng.standard_normal(param_shape) + 1.0).astype(dtype) if use_affine else None
    has_beta = use_affine and spec.has_beta
    beta = rng.standard_normal(param_shape).astype(dtype) if has_beta else None
    if not training:
        kwargs["training"] = False
        kwargs["running_mean"] = (rng.standard_normal(param_shape) + offset).astype(dtype)
        kwargs["running_var"] = rng.uniform(0.5, 3.0, param_shape).astype(dtype) * scale**2
    call = Call(spec.name, x, gamma, beta, kwargs)
    # Statistics need two values per group where the op says so in training (batch and
    # instance norm), and whenever the variance is Bessel-corrected.
    needs_two = kwargs["bessel"] or (training and spec.min_values > 1)
    assume(not needs_two or call.count >= 2)
    return call


def error_scales(x, gamma, dy, cache) -> dict[str, float]:
    """Absolute error yardsticks for y and the gradients, from forward error analysis.

    Every implementation's rounding obeys these, whatever its order of operations:

    - ``cond``: x - mean cancels, so xhat carries an error of ~u * |x| * inv_std (u the
      unit roundoff); 1 for well-spread data, large when a group's values nearly coincide.
      For RMS norm (whose cached mean is zero) nothing cancels and this is max|xhat|, at
      most sqrt(M): the size of the terms of dgamma.
    - ``y``: gamma * xhat, so ~|gamma| * cond.
    - ``dx``: a difference of terms of size |dy * gamma| * inv_std, which cancel to
      O(eps / var) with two values per group (RMS norm's terms are the same size).
    - ``dgamma``, ``dbeta``: sums of terms |dy * xhat| and |dy|, which may cancel.

    Multiply by a relative tolerance to get an ``atol``.
    """
    g = 1.0 if gamma is None else float(np.max(np.abs(gamma)))
    inv_std = float(np.max(cache.inv_std))
    cond = max(1.0, (float(np.max(np.abs(x))) + float(np.max(np.abs(cache.mean)))) * inv_std)
    dy_max, dy_sum = float(np.max(np.abs(dy))), float(np.sum(np.abs(dy)))
    return {
        "cond": cond,
        "y": g * cond,
        "dx": dy_max * g * inv_std * cond,
        "dgamma": dy_sum * cond,
        "dbeta": dy_sum,
    }

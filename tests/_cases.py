"""Hypothesis strategies for normalization calls: op, layout, shape, convention, memory layout.

A :class:`Call` bundles everything one forward call needs, so a test can run the forward,
both backwards, the numerical check and PyTorch on the same inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

import normgrad as ng

OPS = ("batch_norm", "layer_norm", "group_norm", "instance_norm")
MAX_SIZE = 160  # numerical gradients cost two forward passes per element


@dataclass
class Call:
    op: str
    x: np.ndarray
    gamma: np.ndarray | None
    beta: np.ndarray | None
    kwargs: dict = field(default_factory=dict)  # forward keyword arguments
    num_groups: int | None = None

    @property
    def extra(self) -> tuple:
        return () if self.num_groups is None else (self.num_groups,)

    def forward(self, x=None, gamma=None, beta=None, **overrides):
        fwd = getattr(ng, f"{self.op}_forward")
        x = self.x if x is None else x
        gamma = self.gamma if gamma is None else gamma
        beta = self.beta if beta is None else beta
        return fwd(x, gamma, beta, *self.extra, **(self.kwargs | overrides))

    def backward(self, dy, cache):
        return getattr(ng, f"{self.op}_backward")(dy, cache)

    def staged(self, dy, cache, **kw):
        return getattr(ng, f"{self.op}_backward_staged")(dy, cache, **kw)

    def reference_kwargs(self) -> dict:
        """Keyword arguments for normgrad.reference.pytorch.reference."""
        kw = {k: v for k, v in self.kwargs.items() if k != "running_mean" and k != "running_var"}
        if "running_mean" in self.kwargs:
            kw["running_mean"] = self.kwargs["running_mean"].copy()
            kw["running_var"] = self.kwargs["running_var"].copy()
        if self.num_groups is not None:
            kw["num_groups"] = self.num_groups
        return kw

    @property
    def count(self) -> int:
        """M, the number of values per group."""
        return _count(self)


def _memory_layout(rng, shape, dtype, kind):
    """An array of ``shape`` that is contiguous, strided (every other element) or transposed."""
    if kind == "strided":
        base = rng.standard_normal((*shape[:-1], 2 * shape[-1]))
        return base[..., ::2].astype(dtype, copy=False)
    if kind == "transposed":
        return rng.standard_normal(shape[::-1]).astype(dtype).T
    return rng.standard_normal(shape).astype(dtype)


@st.composite
def norm_calls(draw, dtype=np.float64, ops=OPS, allow_eval=True, affine=None):
    """Any op in any layout and variance convention, small enough for numerical gradients."""
    op = draw(st.sampled_from(ops))
    bessel = draw(st.booleans())
    small = st.integers(1, 3)
    kwargs: dict = {"bessel": bessel}
    num_groups = None
    if op == "batch_norm":
        ndim = draw(st.integers(2, 5))
        shape = tuple(draw(small) for _ in range(ndim))
        shape = (draw(st.integers(2, 5)), *shape[1:])
        channel_axis = draw(st.sampled_from([1, -1, *range(ndim)]))
        kwargs["channel_axis"] = channel_axis
        c = shape[channel_axis]
        param_shape = (c,)
        training = draw(st.booleans()) if allow_eval else True
        if not training:
            kwargs["training"] = False
    elif op == "layer_norm":
        ndim = draw(st.integers(1, 4))
        shape = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
        k = draw(st.integers(1, ndim))
        kwargs["normalized_ndim"] = k
        param_shape = shape[ndim - k :]
    elif op == "group_norm":
        num_groups = draw(small)
        c = num_groups * draw(small)
        spatial = tuple(draw(small) for _ in range(draw(st.integers(0, 2))))
        shape = (draw(small), c, *spatial)
        param_shape = (c,)
    else:
        spatial = tuple(draw(small) for _ in range(draw(st.integers(1, 2))))
        shape = (draw(small), draw(small), *spatial)
        param_shape = (shape[1],)
    assume(math.prod(shape) <= MAX_SIZE)

    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["contiguous", "strided", "transposed"]))
    scale = draw(st.floats(0.5, 3.0))
    offset = draw(st.floats(-5.0, 5.0))
    x = _memory_layout(rng, shape, dtype, kind) * dtype(scale) + dtype(offset)
    use_affine = draw(st.booleans()) if affine is None else affine
    gamma = (rng.standard_normal(param_shape) + 1.0).astype(dtype) if use_affine else None
    beta = rng.standard_normal(param_shape).astype(dtype) if use_affine else None
    if kwargs.get("training") is False:
        kwargs["running_mean"] = (rng.standard_normal(param_shape) + offset).astype(dtype)
        kwargs["running_var"] = rng.uniform(0.5, 3.0, param_shape).astype(dtype) * scale**2
    call = Call(op, x, gamma, beta, kwargs, num_groups)
    # Statistics need two values per group when training batch norm, for instance norm,
    # and whenever the variance is Bessel-corrected.
    needs_two = bessel or op == "instance_norm" or (op == "batch_norm" and "training" not in kwargs)
    assume(not needs_two or call.count >= 2)
    return call


def _count(call: Call) -> int:
    x = call.x
    if call.op == "batch_norm":
        return x.size // x.shape[call.kwargs["channel_axis"]]
    if call.op == "layer_norm":
        return math.prod(x.shape[x.ndim - call.kwargs["normalized_ndim"] :])
    if call.op == "group_norm":
        return x.size // (x.shape[0] * call.num_groups)
    return math.prod(x.shape[2:])


def error_scales(x, gamma, dy, cache) -> dict[str, float]:
    """Absolute error yardsticks for y and the gradients, from forward error analysis.

    Every implementation's rounding obeys these, whatever its order of operations:

    - ``cond``: x - mean cancels, so xhat carries an error of ~u * |x| * inv_std (u the
      unit roundoff); 1 for well-spread data, large when a group's values nearly coincide.
    - ``y``: gamma * xhat, so ~|gamma| * cond.
    - ``dx``: a difference of terms of size |dy * gamma| * inv_std, which cancel to
      O(eps / var) with two values per group.
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

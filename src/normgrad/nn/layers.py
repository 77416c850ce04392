"""The layers that are not normalizations: Linear, ReLU, Sigmoid, Dropout.

Shapes: Linear takes ``(N, in_features)``; its weight is ``(in_features, out_features)``
(the CS231n convention, ``y = x @ W + b``).
"""

from __future__ import annotations

import math

import numpy as np

from normgrad.core import validate
from normgrad.nn.module import Module


class Linear(Module):
    """``y = x @ weight + bias``; x ``(N, in_features)``, weight ``(in_features,
    out_features)``, bias ``(out_features,)``.

    ``input_grad=False`` skips computing dx (for a first layer, whose input is data): on
    the paper's network that is a third of the backward's arithmetic. ``backward`` then
    returns None.
    """

    def __init__(
        self, in_features: int, out_features: int, *, rng, weight_scale=0.01,
        dtype=np.float64, input_grad: bool = True,
    ):  # fmt: skip
        super().__init__()
        in_features = validate.check_positive_int("in_features", in_features)
        out_features = validate.check_positive_int("out_features", out_features)
        self.in_features, self.out_features = in_features, out_features
        std = init_std(weight_scale, in_features, out_features)
        weight = rng.normal(0.0, std, (in_features, out_features)).astype(dtype)
        self.params = {"weight": weight, "bias": np.zeros(out_features, dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.input_grad = input_grad

    def forward(self, x):
        x = validate.as_float_array("x", x)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"Linear({self.in_features}, {self.out_features}) takes x of shape "
                f"(N, {self.in_features}); got shape {x.shape}"
            )
        self._x = x  # saved only once x is known to be usable
        y = x @ self.params["weight"]
        y += self.params["bias"]  # in place: one temporary fewer
        return y

    def backward(self, dout):
        np.matmul(self._saved("_x").T, dout, out=self.grads["weight"])
        self.grads["bias"][...] = dout.sum(axis=0)
        return dout @ self.params["weight"].T if self.input_grad else None

    def extra_repr(self) -> str:
        text = f"in_features={self.in_features}, out_features={self.out_features}"
        return text if self.input_grad else text + ", input_grad=False"


def init_std(weight_scale, fan_in: int, fan_out: int) -> float:
    """A number is the standard deviation itself; names give the usual schemes."""
    if isinstance(weight_scale, str):
        schemes = {
            "he": math.sqrt(2.0 / fan_in),
            "kaiming": math.sqrt(2.0 / fan_in),
            "lecun": math.sqrt(1.0 / fan_in),
            "xavier": math.sqrt(2.0 / (fan_in + fan_out)),
            "glorot": math.sqrt(2.0 / (fan_in + fan_out)),
        }
        if weight_scale not in schemes:
            raise ValueError(
                f"unknown weight init {weight_scale!r}; expected a number or one of "
                f"{', '.join(schemes)}"
            )
        return schemes[weight_scale]
    std = float(weight_scale)
    if not std > 0:
        raise ValueError(f"weight_scale must be positive; got {weight_scale!r}")
    return std


class ReLU(Module):
    """``max(x, 0)`` elementwise, any shape; the gradient at 0 is taken as 0."""

    def forward(self, x):
        self._mask = x > 0
        # np.where, not x * mask: -inf * 0 is NaN and -1 * 0 is -0.0; max(x, 0) is neither.
        return np.where(self._mask, x, np.zeros((), dtype=x.dtype))

    def backward(self, dout):
        return dout * self._saved("_mask")


class Sigmoid(Module):
    """``1 / (1 + exp(-x))`` elementwise, any shape."""

    def forward(self, x):
        with np.errstate(over="ignore"):  # exp(-x) = inf for x << 0 gives 0, as it should
            out = np.exp(np.negative(x))
            out += 1.0
            self._out = np.reciprocal(out, out=out)  # in place: no temporaries
        return self._out

    def backward(self, dout):
        out = self._saved("_out")
        dx = 1.0 - out
        dx *= out
        dx *= dout
        return dx


class Dropout(Module):
    """Inverted dropout: zeroes each value with probability ``p`` in training, scales the
    rest by ``1 / (1 - p)``; the identity in eval mode (PyTorch's convention for ``p``)."""

    def __init__(self, p: float = 0.5, *, rng):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability p must be in [0, 1); got {p}")
        self.p, self.rng = p, rng

    def forward(self, x):
        if not self.training or self.p == 0.0:
            self._mask = None  # the identity
            return x
        self._mask = (self.rng.random(x.shape) >= self.p) / (1.0 - self.p)
        return x * self._mask

    def backward(self, dout):
        mask = self._saved("_mask")
        return dout if mask is None else dout * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"

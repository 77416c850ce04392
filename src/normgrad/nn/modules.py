"""Layers with parameters, gradients and train/eval mode, on top of the functional core.

The model contract the trainer relies on (every :class:`Module` keeps it):

- ``forward(x) -> out`` caches what ``backward`` needs; ``backward(dout) -> dx`` fills
  ``grads`` and returns the gradient for the layer below.
- ``parameters()`` and ``gradients()`` are dicts with the same keys (dotted names such as
  ``"fc1.weight"``); optimizers update the parameter arrays *in place*.
- ``buffers()`` holds state that is not trained (running statistics).
- ``train()`` / ``eval()`` switch the mode of the module and everything inside it.
- ``state_dict()`` copies parameters and buffers; ``load_state_dict()`` copies them back,
  refusing missing, unexpected or wrongly shaped entries.

Shapes: Linear takes ``(N, in_features)``; its weight is ``(in_features, out_features)``
(the CS231n convention, ``y = x @ W + b``).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

import normgrad as ng


class Module:
    """Base class: a layer or a container of layers."""

    def __init__(self) -> None:
        self.training = True
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self._buffers: dict[str, np.ndarray] = {}
        self._children: dict[str, Module] = {}

    # -- structure ---------------------------------------------------------
    def add(self, name: str, module: Module) -> Module:
        self._children[name] = module
        return module

    def _named(self, attr: str) -> dict[str, np.ndarray]:
        out = dict(getattr(self, attr))
        for cname, child in self._children.items():
            out |= {f"{cname}.{k}": v for k, v in child._named(attr).items()}
        return out

    def parameters(self) -> dict[str, np.ndarray]:
        return self._named("params")

    def gradients(self) -> dict[str, np.ndarray]:
        return self._named("grads")

    def buffers(self) -> dict[str, np.ndarray]:
        return self._named("_buffers")

    # -- mode --------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        self.training = mode
        for child in self._children.values():
            child.train(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    # -- passes ------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    __call__ = forward

    # -- state -------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer, by dotted name."""
        return {k: v.copy() for k, v in (self.parameters() | self.buffers()).items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy ``state`` into the parameters and buffers (in place); refuse any mismatch."""
        own = self.parameters() | self.buffers()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(
                f"state does not fit this model: missing {missing or 'nothing'}, "
                f"unexpected {unexpected or 'nothing'}"
            )
        for k, target in own.items():
            value = np.asarray(state[k])
            if value.shape != target.shape:
                raise ValueError(
                    f"state[{k!r}] has shape {value.shape}; the model's is {target.shape}"
                )
            target[...] = value


class Linear(Module):
    """``y = x @ weight + bias``; weight ``(in_features, out_features)``.

    ``input_grad=False`` skips computing dx (for a first layer, whose input is data): on
    the paper's network that is a third of the backward's arithmetic. ``backward`` then
    returns None.
    """

    def __init__(
        self, in_features: int, out_features: int, *, rng, weight_scale=0.01,
        dtype=np.float64, input_grad: bool = True,
    ):  # fmt: skip
        super().__init__()
        std = init_std(weight_scale, in_features, out_features)
        weight = rng.normal(0.0, std, (in_features, out_features)).astype(dtype)
        self.params = {"weight": weight, "bias": np.zeros(out_features, dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.input_grad = input_grad

    def forward(self, x):
        self._x = x
        return x @ self.params["weight"] + self.params["bias"]

    def backward(self, dout):
        np.matmul(self._x.T, dout, out=self.grads["weight"])
        self.grads["bias"][...] = dout.sum(axis=0)
        return dout @ self.params["weight"].T if self.input_grad else None


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


class _Norm(Module):
    """Shared by the normalization layers: affine parameters and the cache."""

    def __init__(self, param_shape, affine: bool, dtype=np.float64):
        super().__init__()
        self.affine = affine
        if affine:
            self.params = {
                "gamma": np.ones(param_shape, dtype),
                "beta": np.zeros(param_shape, dtype),
            }
            self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def _affine(self):
        return (self.params["gamma"], self.params["beta"]) if self.affine else (None, None)

    def _store_grads(self, dgamma, dbeta):
        if self.affine:
            self.grads["gamma"][...] = dgamma
            self.grads["beta"][...] = dbeta


class BatchNorm(_Norm):
    """Batch norm over every axis but ``channel_axis`` (PyTorch's BatchNorm1d/2d/3d).

    Running statistics follow PyTorch: ``momentum`` (default 0.1) weights the *new* batch,
    the running variance is unbiased, and ``momentum=None`` keeps a cumulative average over
    the batches seen. ``track_running_stats=False`` uses batch statistics in eval mode too.
    ``comm`` (an mpi4py communicator) synchronizes the training statistics across ranks.
    """

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
    ):
        super().__init__((num_features,), affine, dtype)
        self.eps, self.momentum, self.channel_axis = eps, momentum, channel_axis
        self.comm = comm  # an mpi4py communicator: synchronized batch norm in training
        self.track_running_stats = track_running_stats
        if track_running_stats:
            self._buffers = {
                "running_mean": np.zeros(num_features, dtype),
                "running_var": np.ones(num_features, dtype),
                "num_batches_tracked": np.zeros((), dtype=np.int64),
            }

    def forward(self, x):
        gamma, beta = self._affine()
        use_batch = self.training or not self.track_running_stats
        kw = {"eps": self.eps, "channel_axis": self.channel_axis}
        if self.training and self.comm is not None:
            kw["comm"] = self.comm
        if use_batch and self.track_running_stats and self.training:
            self._buffers["num_batches_tracked"] += 1
            n = int(self._buffers["num_batches_tracked"])
            momentum = 1.0 / n if self.momentum is None else self.momentum
            kw |= {
                "running_mean": self._buffers["running_mean"],
                "running_var": self._buffers["running_var"],
                "momentum": momentum,
            }
        elif not use_batch:
            kw |= {
                "training": False,
                "running_mean": self._buffers["running_mean"],
                "running_var": self._buffers["running_var"],
            }
        y, self._cache = ng.batch_norm_forward(x, gamma, beta, **kw)
        return y

    def backward(self, dout):
        dx, dgamma, dbeta = ng.batch_norm_backward(dout, self._cache)
        self._store_grads(dgamma, dbeta)
        return dx


class LayerNorm(_Norm):
    """Layer norm over the last ``len(normalized_shape)`` axes, elementwise affine."""

    def __init__(self, normalized_shape, *, eps=1e-5, affine: bool = True, dtype=np.float64):
        shape = (
            (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        )
        super().__init__(shape, affine, dtype)
        self.eps, self.ndim = eps, len(shape)

    def forward(self, x):
        gamma, beta = self._affine()
        y, self._cache = ng.layer_norm_forward(
            x, gamma, beta, normalized_ndim=self.ndim, eps=self.eps
        )
        return y

    def backward(self, dout):
        dx, dgamma, dbeta = ng.layer_norm_backward(dout, self._cache)
        self._store_grads(dgamma, dbeta)
        return dx


class GroupNorm(_Norm):
    """Group norm of ``(N, C, *spatial)`` in ``num_groups`` groups, per-channel affine."""

    def __init__(self, num_groups, num_channels, *, eps=1e-5, affine=True, dtype=np.float64):
        super().__init__((num_channels,), affine, dtype)
        self.num_groups, self.eps = num_groups, eps

    def forward(self, x):
        gamma, beta = self._affine()
        y, self._cache = ng.group_norm_forward(x, gamma, beta, self.num_groups, eps=self.eps)
        return y

    def backward(self, dout):
        dx, dgamma, dbeta = ng.group_norm_backward(dout, self._cache)
        self._store_grads(dgamma, dbeta)
        return dx


class ReLU(Module):
    def forward(self, x):
        self._mask = x > 0
        return x * self._mask

    def backward(self, dout):
        return dout * self._mask


class Sigmoid(Module):
    def forward(self, x):
        with np.errstate(over="ignore"):  # exp(-x) = inf for x << 0 gives 0, as it should
            self._out = 1.0 / (1.0 + np.exp(-x))
        return self._out

    def backward(self, dout):
        return dout * self._out * (1.0 - self._out)


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
            self._mask = None
            return x
        self._mask = (self.rng.random(x.shape) >= self.p) / (1.0 - self.p)
        return x * self._mask

    def backward(self, dout):
        return dout if self._mask is None else dout * self._mask


class Sequential(Module):
    """Layers applied in order; names are given (``("fc1", Linear(...))``) or numbered."""

    def __init__(self, *layers):
        super().__init__()
        for i, item in enumerate(layers):
            name, layer = item if isinstance(item, tuple) else (str(i), item)
            self.add(name, layer)

    def forward(self, x):
        for layer in self._children.values():
            x = layer.forward(x)
        return x

    def backward(self, dout):
        for layer in reversed(self._children.values()):
            dout = layer.backward(dout)
        return dout

    def __getitem__(self, name: str) -> Module:
        return self._children[name]

    def __iter__(self):
        return iter(self._children.items())


def softmax_cross_entropy(scores: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(scores) against integer labels; returns (loss, dscores)."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = scores.shape[0]
    loss = -log_probs[np.arange(n), y].mean()
    dscores = np.exp(log_probs)
    dscores[np.arange(n), y] -= 1.0
    return float(loss), dscores / n


class FullyConnectedNet(Sequential):
    """The course's network: ``{affine - [norm] - activation} x L - affine - softmax``.

    Layer names: ``fc1, norm1, act1, ..., fc{L+1}``; parameters ``fc1.weight``,
    ``norm1.gamma``, buffers ``norm1.running_mean``, and so on.

    Args:
        input_dim, hidden_dims, num_classes: layer sizes.
        normalization: None, ``"batchnorm"``, ``"layernorm"`` or ``"groupnorm"`` (with
            ``num_groups`` groups of features), before each activation.
        activation: ``"relu"`` or ``"sigmoid"``.
        weight_scale: the std of the Gaussian weights, or ``"he"``, ``"xavier"``, ...
        seed: seeds the weights.
        dtype: of parameters and buffers (float32 trains several times faster than float64
            on a CPU; float64 is for gradient checks).
        comm: an mpi4py communicator; batch norm layers synchronize over it.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims,
        num_classes: int,
        *,
        normalization: str | None = None,
        activation: str = "relu",
        weight_scale=1e-2,
        seed: int = 0,
        dtype=np.float64,
        num_groups: int = 4,
        comm=None,
    ):
        if normalization not in (None, "batchnorm", "layernorm", "groupnorm"):
            raise ValueError(
                "normalization must be None, 'batchnorm', 'layernorm' or 'groupnorm'; "
                f"got {normalization!r}"
            )
        if activation not in ("relu", "sigmoid"):
            raise ValueError(f"activation must be 'relu' or 'sigmoid'; got {activation!r}")
        rng = np.random.default_rng(seed)
        layers = []
        dims = [input_dim, *hidden_dims, num_classes]
        last = len(dims) - 1
        for i, (d_in, d_out) in enumerate(itertools.pairwise(dims), start=1):
            # the first layer's input is data: no gradient is needed for it
            fc = Linear(
                d_in, d_out, rng=rng, weight_scale=weight_scale, dtype=dtype, input_grad=i > 1
            )
            layers.append((f"fc{i}", fc))
            if i == last:
                break
            if normalization == "batchnorm":
                layers.append((f"norm{i}", BatchNorm(d_out, dtype=dtype, comm=comm)))
            elif normalization == "layernorm":
                layers.append((f"norm{i}", LayerNorm(d_out, dtype=dtype)))
            elif normalization == "groupnorm":
                if d_out % num_groups:
                    raise ValueError(f"num_groups={num_groups} must divide hidden size {d_out}")
                layers.append((f"norm{i}", GroupNorm(num_groups, d_out, dtype=dtype)))
            layers.append((f"act{i}", ReLU() if activation == "relu" else Sigmoid()))
        super().__init__(*layers)
        self.num_hidden = len(hidden_dims)

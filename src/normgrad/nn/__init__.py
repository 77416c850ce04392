"""Layers, networks and optimizers on top of the functional core.

- :mod:`normgrad.nn.module`: the base class :class:`Module` (its docstring is the model
  contract the trainer relies on) and :class:`Sequential`;
- :mod:`normgrad.nn.layers`: Linear, ReLU, Sigmoid, Dropout;
- :mod:`normgrad.nn.norms`: BatchNorm, InstanceNorm, GroupNorm, LayerNorm, RMSNorm, one
  layer per op of the table of ops, sharing one forward and one backward;
- :mod:`normgrad.nn.losses`: softmax_cross_entropy;
- :mod:`normgrad.nn.models`: the course's FullyConnectedNet;
- :mod:`normgrad.nn.optim`: SGD with momentum, Adam;
- :mod:`normgrad.nn.population`: inference statistics as the paper's Algorithm 2
  computes them (population mean and unbiased variance over training mini-batches).
"""

from normgrad.nn.layers import Dropout, Linear, ReLU, Sigmoid, init_std
from normgrad.nn.losses import softmax_cross_entropy
from normgrad.nn.models import FullyConnectedNet
from normgrad.nn.module import Module, Sequential
from normgrad.nn.norms import BatchNorm, GroupNorm, InstanceNorm, LayerNorm, RMSNorm
from normgrad.nn.optim import SGD, Adam, Optimizer
from normgrad.nn.population import (
    load_statistics,
    population_statistics,
    recompute_population_statistics,
    using_statistics,
)

__all__ = [
    "SGD",
    "Adam",
    "BatchNorm",
    "Dropout",
    "FullyConnectedNet",
    "GroupNorm",
    "InstanceNorm",
    "LayerNorm",
    "Linear",
    "Module",
    "Optimizer",
    "RMSNorm",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "init_std",
    "load_statistics",
    "population_statistics",
    "recompute_population_statistics",
    "softmax_cross_entropy",
    "using_statistics",
]

"""Layers, networks and optimizers on top of the functional core (see modules.py for the
model contract the trainer relies on)."""

from normgrad.nn.modules import (
    BatchNorm,
    Dropout,
    FullyConnectedNet,
    GroupNorm,
    LayerNorm,
    Linear,
    Module,
    ReLU,
    Sequential,
    Sigmoid,
    init_std,
    softmax_cross_entropy,
)
from normgrad.nn.optim import SGD, Adam, Optimizer

__all__ = [
    "SGD",
    "Adam",
    "BatchNorm",
    "Dropout",
    "FullyConnectedNet",
    "GroupNorm",
    "LayerNorm",
    "Linear",
    "Module",
    "Optimizer",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "init_std",
    "softmax_cross_entropy",
]
